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

#: The bar the meta-learner is held to (leave-one-dataset-out).
GOALS = {"spearman": 0.85, "regret@1": 1.0, "coverage_low": 0.75, "coverage_high": 0.85}


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


def verdict(summary: pd.DataFrame, learner: str = "metaml") -> dict[str, Any]:
    """Whether the meta-learner beats every baseline on Spearman and top-1 regret, and meets the goals."""
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
                 learner: str = "metaml") -> Path:
    """Write ``report.md``, ``summary.json``, ``tasks.csv`` and the plots into ``out_dir``; return the report path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = result.summary()
    tasks = result.task_table()
    tasks.to_csv(out_dir / "tasks.csv", index=False)
    by_source = result.by_source("spearman")
    regret_by_source = result.by_source("regret@1")
    coverage = tasks[tasks["predictor"] == learner].groupby("source")["coverage"].mean() if len(tasks) else None
    v = verdict(summary, learner)
    plots = _plots(result, out_dir, learner)
    (out_dir / "summary.json").write_text(json.dumps(
        {"protocol": result.protocol, "context": context, "summary": json.loads(summary.to_json(orient="index")),
         "by_source_spearman": json.loads(by_source.to_json(orient="index")), "noise_floor": noise,
         "verdict": v, "folds": result.folds}, indent=2, default=str))
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
    if coverage is not None and len(coverage):
        lines += ["## Interval coverage of the meta-learner by source (target 0.80)", "",
                  _table(coverage.to_frame("coverage")), ""]
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
            lines.append(f"- 80% intervals cover 75-85% of held-out runs: "
                         f"**{'met' if v['coverage_goal_met'] else 'not met'}** "
                         f"({_fmt(summary.loc[learner, 'coverage'])})")
    lines += ["", *(f"![{p}]({p})" for p in plots), ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
