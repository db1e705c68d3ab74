"""Plots of the pages, drawn on the server with matplotlib as inline SVG (no JavaScript, no request for an image).

Each function returns the ``<svg>`` element as text (``role="img"`` with a label, sized by CSS through its
``viewBox``), or None when there is nothing to draw. Text stays text (``svg.fonttype: none``), so the page's font and
a screen reader's find it.
"""

from __future__ import annotations

import html
import io
import re
import threading
from collections.abc import Sequence
from typing import Any

import matplotlib
import pandas as pd
from matplotlib.figure import Figure

#: Colours (Okabe-Ito, readable with colour-blindness) and markers, so that series differ by more than colour.
COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
#: Points of a scatter plot drawn at most (the best ones are kept).
MAX_POINTS = 3000

#: matplotlib's rc settings are process-wide: one plot at a time is drawn under ours.
_LOCK = threading.Lock()
_RC = {"svg.fonttype": "none", "svg.hashsalt": "metaml-ui", "font.size": 10, "axes.spines.top": False,
       "axes.spines.right": False, "font.family": ["DejaVu Sans", "sans-serif"]}


def _svg(fig: Figure, label: str) -> str:
    """``fig`` as an inline ``<svg>`` element labelled ``label`` (called under :data:`_RC`)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r'<svg([^>]*?) width="[^"]*" height="[^"]*"', r"<svg\1", text, count=1)
    return text.replace("<svg", f'<svg role="img" aria-label="{html.escape(label, quote=True)}"', 1)


def _figure(width: float = 7.2, height: float = 4.2) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def score_vs_cost(points: pd.DataFrame, metric: str) -> str | None:
    """Score against training time, one series per method.

    Args:
        points: columns ``method_name``, ``outcome_score`` (normalized) and ``outcome_runtime_s`` (> 0 kept).
        metric: the primary metric's name, for the axis.
    """
    points = points[points["outcome_runtime_s"] > 0]
    if points.empty:
        return None
    points = points.sort_values("outcome_score", ascending=False).head(MAX_POINTS)
    with _LOCK, matplotlib.rc_context(_RC):
        fig = _figure()
        ax = fig.add_subplot()
        methods = points["method_name"].value_counts().index.tolist()
        for i, method in enumerate(methods):
            part = points[points["method_name"] == method]
            ax.scatter(part["outcome_runtime_s"], part["outcome_score"], s=16, alpha=0.7,
                       color=COLORS[i % len(COLORS)], marker=MARKERS[i % len(MARKERS)],
                       label=f"{method} ({len(part)})", linewidths=0)
        ax.set_xscale("log")
        ax.set_xlabel("training time (s, log scale)")
        ax.set_ylabel(f"{metric} (normalized)")
        ax.grid(True, alpha=0.3)
        ax.legend(title="method (runs)", fontsize=8, frameon=False, loc="best")
        return _svg(fig, f"Scatter plot of {metric} against training time for {len(points)} runs, "
                         f"by method: {', '.join(methods)}")


def learning_curve(curve: Sequence[Any]) -> str | None:
    """One line per metric of a run's learning curve, against the step (or the epoch when no step is recorded).

    Args:
        curve: the record's ``outcome.curve`` points (``step``, ``epoch``, ``metric``, ``value``).
    """
    rows = [{"step": p.step, "epoch": p.epoch, "metric": p.metric, "value": p.value} for p in curve]
    if not rows:
        return None
    frame = pd.DataFrame(rows)
    axis = "step" if frame["step"].notna().all() else "epoch"
    frame = frame.dropna(subset=[axis])
    if frame.empty:
        return None
    metrics = list(dict.fromkeys(frame["metric"]))
    losses = [m for m in metrics if "loss" in m]
    others = [m for m in metrics if m not in losses]
    panels = [group for group in (others, losses) if group]
    with _LOCK, matplotlib.rc_context(_RC):
        fig = _figure(height=3.4 * len(panels))
        axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
        for ax, group in zip(axes, panels, strict=True):
            for i, metric in enumerate(group):
                part = frame[frame["metric"] == metric].sort_values(axis)
                ax.plot(part[axis], part["value"], marker=MARKERS[i % len(MARKERS)], markersize=4,
                        color=COLORS[i % len(COLORS)], label=metric, linewidth=1.5)
            ax.set_ylabel("loss" if group is losses else "value")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8, frameon=False, loc="best")
        axes[-1].set_xlabel(axis)
        return _svg(fig, f"Learning curve by {axis}: {', '.join(metrics)}")
