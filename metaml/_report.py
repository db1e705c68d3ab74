"""The evaluation report: Markdown with the figures that matter and PNG plots beside it.

Plots: predicted vs actual (the meta-learner), per-task rank correlation for every predictor, top-1 regret against
the baselines, and interval coverage by source.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from metaml._evaluate import EvaluationResult

#: The bar the meta-learner is held to (leave-one-dataset-out): mean per-task Spearman and top-1 regret, and 80%
#: intervals covering 77-83% of held-out runs in every source; above the lookup on every source.
GOALS = {"spearman": 0.75, "regret@1": 2.0, "coverage_low": 0.77, "coverage_high": 0.83}
LOOKUP = "lookup"


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def _table(df: pd.DataFrame, digits: int = 3) -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join([df.index.name or "", *cols]) + " |", "|" + "---|" * (len(cols) + 1)]
    for idx, row in df.iterrows():
        lines.append("| " + " | ".join([str(idx), *(_fmt(v, digits) for v in row.to_numpy())]) + " |")
    return "\n".join(lines)


def verdict(summary: pd.DataFrame, learner: str = "metaml", *, by_source: pd.DataFrame | None = None,
            regret_by_source: pd.DataFrame | None = None,
            coverage_by_source: pd.Series | None = None) -> dict[str, Any]:
    """Whether the meta-learner beats every baseline on Spearman and top-1 regret, the lookup on every source, and
    meets the goals."""
    if learner not in summary.index:
        return {}
    me = summary.loc[learner]
    others = summary.drop(index=[i for i in summary.index if str(i).startswith("metaml")])
    out = {
        "beats_baselines_spearman": bool((me["spearman"] > others["spearman"]).all()),
        "beats_baselines_regret@1": bool((me["regret@1"] < others["regret@1"]).all()),
        "spearman_goal_met": bool(me["spearman"] >= GOALS["spearman"]),
        "regret_goal_met": bool(me["regret@1"] <= GOALS["regret@1"]),
    }
    if "coverage" in me and not math.isnan(me["coverage"]):
        out["coverage_goal_met"] = bool(GOALS["coverage_low"] <= me["coverage"] <= GOALS["coverage_high"])
    if by_source is not None and LOOKUP in by_source and learner in by_source:
        worse = by_source.index[by_source[learner] < by_source[LOOKUP] - 1e-9].tolist()
        out["sources_below_lookup_spearman"] = worse
    if regret_by_source is not None and LOOKUP in regret_by_source and learner in regret_by_source:
        worse = regret_by_source.index[regret_by_source[learner] > regret_by_source[LOOKUP] + 1e-9].tolist()
        out["sources_above_lookup_regret"] = worse
    if coverage_by_source is not None and len(coverage_by_source):
        off = coverage_by_source[(coverage_by_source < GOALS["coverage_low"])
                                 | (coverage_by_source > GOALS["coverage_high"])]
        out["sources_coverage_outside_77_83"] = {k: round(float(v), 3) for k, v in off.items()}
    return out


def _plots(result: EvaluationResult, out_dir: Path, learner: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    preds = result.predictions
    tasks = result.task_table()
    me = preds[(preds["predictor"] == learner) & preds["points"].notna()]
    if len(me):
        fig, ax = plt.subplots(figsize=(5, 5))
        sample = me.sample(min(len(me), 5000), random_state=0)
        for source, g in sample.groupby("provenance_source"):
            ax.scatter(g["points"], g["pred"], s=4, alpha=0.4, label=source)
        lims = [min(sample["points"].min(), sample["pred"].min()), max(sample["points"].max(), sample["pred"].max())]
        ax.plot(lims, lims, "k--", lw=1)
        ax.set_xlabel("actual score (points)")
        ax.set_ylabel("predicted score (points)")
        ax.set_title(f"{result.protocol}: predicted vs actual ({learner})")
        ax.legend(fontsize=7, markerscale=3)
        fig.tight_layout()
        fig.savefig(out_dir / "predicted_vs_actual.png", dpi=110)
        plt.close(fig)
        files.append("predicted_vs_actual.png")
    if len(tasks):
        names = list(dict.fromkeys(tasks["predictor"]))
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.boxplot([tasks.loc[tasks["predictor"] == n, "spearman"].dropna() for n in names], showfliers=False)
        ax.set_xticks(range(1, len(names) + 1), names, rotation=20)
        ax.axhline(GOALS["spearman"], color="g", ls=":", lw=1)
        ax.set_ylabel("per-task Spearman")
        ax.set_title(f"{result.protocol}: rank correlation within each held-out task")
        fig.tight_layout()
        fig.savefig(out_dir / "per_task_spearman.png", dpi=110)
        plt.close(fig)
        files.append("per_task_spearman.png")
        regret = tasks.groupby("predictor", sort=False)[["regret@1", "regret@5"]].mean().loc[names]
        fig, ax = plt.subplots(figsize=(7, 3.5))
        x = np.arange(len(names))
        ax.bar(x - 0.2, regret["regret@1"], 0.4, label="top-1 regret")
        ax.bar(x + 0.2, regret["regret@5"], 0.4, label="top-5 regret")
        ax.set_xticks(x, names, rotation=20)
        ax.set_ylabel("points")
        ax.legend()
        ax.set_title(f"{result.protocol}: regret against the baselines (lower is better)")
        fig.tight_layout()
        fig.savefig(out_dir / "regret.png", dpi=110)
        plt.close(fig)
        files.append("regret.png")
    return files


def write_report(result: EvaluationResult, out_dir: Path, *, context: dict[str, Any], noise: dict[str, float],
                 learner: str = "metaml", ceiling: pd.DataFrame | None = None) -> Path:
    """Write ``report.md``, ``summary.json``, ``tasks.csv`` and the plots into ``out_dir``; return the report path.

    Args:
        noise: :func:`metaml._evaluate.noise_floor`'s figures.
        ceiling: :func:`metaml._evaluate.noise_ceiling`'s table (per source).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = result.summary()
    tasks = result.task_table()
    tasks.to_csv(out_dir / "tasks.csv", index=False)
    by_source = result.by_source("spearman")
    regret_by_source = result.by_source("regret@1")
    coverage = result.coverage_by_source(learner)
    v = verdict(summary, learner, by_source=by_source, regret_by_source=regret_by_source, coverage_by_source=coverage)
    plots = _plots(result, out_dir, learner)
    fold_cost = {"folds": len(result.fold_seconds), "mean_s": float(np.mean(result.fold_seconds))
                 if result.fold_seconds else None, "total_s": float(np.sum(result.fold_seconds))}
    (out_dir / "summary.json").write_text(json.dumps(
        {"protocol": result.protocol, "context": context, "summary": json.loads(summary.to_json(orient="index")),
         "by_source_spearman": json.loads(by_source.to_json(orient="index")),
         "by_source_regret@1": json.loads(regret_by_source.to_json(orient="index")),
         "coverage_by_source": json.loads(coverage.to_json()) if len(coverage) else {},
         "noise_floor": noise, "noise_ceiling": json.loads(ceiling.to_json(orient="index"))
         if ceiling is not None and len(ceiling) else {},
         "fold_cost": fold_cost, "verdict": v, "folds": result.folds}, indent=2, default=str))
    macro = by_source.mean(axis=0) if len(by_source) else pd.Series(dtype=float)
    lines = [
        f"# Meta-learner evaluation: {result.protocol}",
        "",
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M UTC} by `metaml evaluate --protocol {result.protocol}`.",
        "",
        "## Setup",
        "",
        *(f"- {k}: {v}" for k, v in context.items()),
        f"- held-out units evaluated: {len(result.folds)} ({', '.join(result.folds[:12])}"
        f"{', …' if len(result.folds) > 12 else ''})",
        "- every predictor is fit on the training folds only; a held-out unit never reaches training",
        "- ranking metrics compare distinct configurations within a task (seeds and data splits averaged); error "
        "and coverage metrics are per run; points = 100 x the normalized score",
        "",
        "## Summary (mean over held-out tasks)",
        "",
        _table(summary),
        "",
        "## Spearman by source (mean over that source's held-out tasks)",
        "",
        _table(by_source),
        "",
        f"Macro average over sources: {', '.join(f'{k} {_fmt(v)}' for k, v in macro.items())}",
        "",
        "## Top-1 regret by source (points)",
        "",
        _table(regret_by_source, 2),
        "",
    ]
    if len(coverage):
        lines += ["## Interval coverage of the meta-learner by source (80% intervals; goal 0.77-0.83)", "",
                  _table(coverage.to_frame("coverage")), ""]
    if ceiling is not None and len(ceiling):
        lines += ["## Noise ceiling by source", "",
                  "In tasks whose configurations repeat over seeds, half of each configuration's seeds ranked "
                  "against the other half: what a perfect predictor of one run could reach.", "",
                  _table(ceiling), ""]
    if result.fold_seconds:
        lines += [f"Each fold trains every predictor from scratch: {fold_cost['mean_s']:.0f} s per fold on average, "
                  f"{fold_cost['total_s'] / 60:.0f} min for {fold_cost['folds']} folds.", ""]
    lines += ["## Noise floor", ""]
    if noise:
        lines += [f"TaskWeb repeats identical configurations with several seeds: {int(noise['configs']):,} "
                  f"configurations. Seed-to-seed standard deviation {noise['seed_std_points']:.2f} points, mean "
                  f"absolute difference between two seeds {noise['seed_abs_diff_points']:.2f} points, and the "
                  f"per-task Spearman between two seeds' scores {noise['seed_vs_seed_spearman']:.3f}: no predictor "
                  "can rank single runs better than that on those tasks.", ""]
    else:
        lines += ["No repeated configurations in this knowledge base.", ""]
    lines += ["## Against the bar", ""]
    if v:
        lines += [f"- beats every baseline on mean Spearman: **{'yes' if v['beats_baselines_spearman'] else 'no'}**",
                  f"- beats every baseline on mean top-1 regret: **{'yes' if v['beats_baselines_regret@1'] else 'no'}"
                  "**",
                  f"- mean per-task Spearman >= {GOALS['spearman']}: "
                  f"**{'met' if v['spearman_goal_met'] else 'not met'}** ({_fmt(summary.loc[learner, 'spearman'])})",
                  f"- mean top-1 regret <= {GOALS['regret@1']} point: "
                  f"**{'met' if v['regret_goal_met'] else 'not met'}** "
                  f"({_fmt(summary.loc[learner, 'regret@1'], 2)})"]
        if "coverage_goal_met" in v:
            lines.append(f"- 80% intervals cover 77-83% of held-out runs (mean over tasks): "
                         f"**{'met' if v['coverage_goal_met'] else 'not met'}** "
                         f"({_fmt(summary.loc[learner, 'coverage'])}); sources outside 77-83% (pooled runs): "
                         f"{v.get('sources_coverage_outside_77_83') or 'none'}")
        if "sources_below_lookup_spearman" in v:
            lines.append(f"- at least as good as the lookup on every source: Spearman below it on "
                         f"{v['sources_below_lookup_spearman'] or 'none'}; top-1 regret above it on "
                         f"{v.get('sources_above_lookup_regret') or 'none'}")
    lines += ["", *(f"![{p}]({p})" for p in plots), ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
