"""The PR evidence's plots: one PNG per CSV that autoops.evidence.write_evidence wrote.

Reruns on the same CSVs give equal bytes (no timestamps, no "Software" stamp), so a rerun for the
same month has nothing new to commit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autoops.evidence import DURATION_BINS, DURATION_HIST, ERROR_BY_HOUR, PRED_VS_ACTUAL
from core.artifacts.comparison import Comparison
from core.paths import LOOP_COMPARISON, LOOP_DIR


def render_plots(folder: Path = LOOP_DIR) -> list[tuple[str, Path]]:
    """PNG files next to their CSVs, as ``(title, path)``."""
    import matplotlib

    matplotlib.use("Agg")  # no display on CI runners
    import matplotlib.pyplot as plt

    comparison = Comparison.read(folder / LOOP_COMPARISON.name)
    made = [
        ("MAE by pickup hour", _error_by_hour(plt, folder, comparison)),
        ("Predicted vs actual", _predicted_vs_actual(plt, folder, comparison)),
        ("Trip duration distribution", _duration_distribution(plt, folder, comparison)),
    ]
    plt.close("all")
    return made


def _error_by_hour(plt: Any, folder: Path, comparison: Comparison) -> Path:
    month, ref = comparison.month, comparison.champion.reference_month
    by_hour = pd.read_csv(folder / ERROR_BY_HOUR.name)
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(
        by_hour["hour"],
        by_hour["champion_reference_holdout_mae"],
        ":",
        color="grey",
        label=f"champion on {ref} holdout (before)",
    )
    for name, colour in (("champion", "tab:red"), ("challenger", "tab:green")):
        ax.plot(by_hour["hour"], by_hour[f"{name}_mae"], "-o", color=colour, ms=3, label=f"{name} on {month}")
    ax.set(xlabel="pickup hour", ylabel="MAE (minutes)", title=f"MAE by pickup hour, {month} holdout")
    ax.set_xticks(range(0, 24, 3))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    # Below the axes: inside, it would hide the morning peak the plot is about.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3, frameon=False, fontsize="small")
    return _save(fig, folder / "error_by_hour.png")


def _predicted_vs_actual(plt: Any, folder: Path, comparison: Comparison) -> Path:
    scatter = pd.read_csv(folder / PRED_VS_ACTUAL.name)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), sharex=True, sharey=True)
    top = float(np.nanmax(scatter[["actual", "champion", "challenger"]].to_numpy()))
    maes = {"champion": comparison.champion.metrics.mae, "challenger": comparison.challenger.metrics.mae}
    for ax, (name, mae), colour in zip(axes, maes.items(), ("tab:red", "tab:green"), strict=True):
        ax.scatter(scatter["actual"], scatter[name], s=4, alpha=0.4, color=colour)
        ax.plot([0, top], [0, top], "k--", lw=1)
        ax.set(title=f"{name} (MAE {mae:.2f})", xlabel="actual duration (min)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("predicted duration (min)")
    fig.suptitle(f"Predicted vs actual on the {comparison.month} holdout")
    return _save(fig, folder / "predicted_vs_actual.png")


def _duration_distribution(plt: Any, folder: Path, comparison: Comparison) -> Path:
    month, ref = comparison.month, comparison.champion.reference_month
    hist = pd.read_csv(folder / DURATION_HIST.name)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = float(DURATION_BINS[1] - DURATION_BINS[0])
    for column, colour, label in (
        ("reference_share", "grey", f"{ref} (reference holdout)"),
        ("current_share", "tab:blue", f"{month}"),
    ):
        bins = hist["bin_start_min"]
        ax.bar(bins, hist[column], width=width, align="edge", alpha=0.5, color=colour, label=label)
    ax.set(xlabel="trip duration (minutes)", ylabel="share of trips", title="Trip durations: then and now")
    ax.legend()
    return _save(fig, folder / "duration_distribution.png")


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    # No "Software" stamp (and Agg writes no date): identical data give identical PNG bytes.
    fig.savefig(path, dpi=90, bbox_inches="tight", metadata={"Software": None})
    return path
