"""The report's plots (matplotlib, Agg backend), each returned as a PNG data URI."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

#: Pixel size of a plot at :data:`DPI` (inches x DPI).
SIZE = (5.2, 3.6)
DPI = 90


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_uri(fig) -> str:
    """The figure as a PNG data URI (the figure is closed)."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return png_data_uri(buf.getvalue())


def _axes(title: str, xlabel: str, ylabel: str):
    fig, ax = plt.subplots(figsize=SIZE)
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def froc_plot(curves: Mapping[str, Sequence[dict]], operating: Mapping[str, dict]) -> str:
    """FROC: lesion sensitivity against false positives per slice, one line per curve (rows of
    ``threshold, fp_per_slice, sensitivity``), its operating point marked."""
    fig, ax = _axes("FROC", "false positives per slice", "lesion sensitivity")
    for name, rows in curves.items():
        line, = ax.plot([r["fp_per_slice"] for r in rows], [r["sensitivity"] for r in rows],
                        drawstyle="steps-post", label=name)
        op = operating.get(name)
        if op:
            ax.plot([op["fp_per_slice"]], [op["sensitivity"]], "o", ms=8, mfc="none",
                    mew=2, color=line.get_color(),
                    label=f"operating point (score ≥ {op['threshold']:.2f})")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(left=0)
    ax.legend(fontsize=8, loc="lower right")
    return figure_uri(fig)


def pr_plot(curves: Mapping[str, tuple[Sequence[float], Sequence[float], float]]) -> str:
    """Precision against recall: ``name -> (recall, precision, AP50)``."""
    fig, ax = _axes("Precision-recall (mask IoU ≥ 0.5, COCOeval)", "recall", "precision")
    for name, (recall, precision, ap) in curves.items():
        ax.plot(recall, precision, label=f"{name} (AP50 {ap:.1f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8, loc="lower left")
    return figure_uri(fig)


def dice_plot(values: Mapping[str, Sequence[float]], xlabel: str = "case (sorted by Dice)"
              ) -> str:
    """Dice per case, each group sorted ascending (one colour per group, e.g. per fold)."""
    fig, ax = _axes("Dice per case", xlabel, "Dice")
    start = 0
    for name, dice in values.items():
        dice = sorted(d for d in dice if not math.isnan(d))
        ax.bar(range(start, start + len(dice)), dice, width=0.85, label=name)
        start += len(dice)
    ax.set_ylim(0, 1.02)
    if len(values) > 1:
        ax.legend(fontsize=8)
    return figure_uri(fig)


def training_plot(series: Mapping[str, Sequence[tuple[float, float]]], title: str,
                  ylabel: str, log: bool = False) -> str:
    """Lines of (iteration, value) pairs: training losses or validation metrics."""
    fig, ax = _axes(title, "iteration", ylabel)
    for name, points in series.items():
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o" if len(xs) < 12 else None, ms=3, label=name)
    if log and all(y > 0 for pts in series.values() for _, y in pts):
        ax.set_yscale("log")
    ax.legend(fontsize=7)
    return figure_uri(fig)


def threshold_plot(scan: Sequence[dict], chosen: float) -> str:
    """Pooled Dice against the score threshold (cross-validation), the operating point marked."""
    fig, ax = _axes("Pooled held-out Dice by score threshold", "score threshold", "Dice")
    t = [s["threshold"] for s in scan]
    for key, label in (("dice_all", "Dice, all slices"), ("dice", "Dice, tumor slices")):
        ax.plot(t, [math.nan if s.get(key) is None else s[key] for s in scan], marker=".",
                label=label)
    ax.axvline(chosen, color="k", ls="--", lw=1, label=f"operating point {chosen:.2f}")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    return figure_uri(fig)
