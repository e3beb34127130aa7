"""Shared plotting helpers: a headless backend, the triplet-space square, saving.

Figures are written by training callbacks (possibly on a machine without a display and
inside DDP workers), so the non-interactive Agg backend is forced before pyplot loads.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# The official code's SCT threshold: the default for the "S_an > threshold" share the curves
# report for every loss. The threshold *line* is drawn only on diagrams of SCT runs
# (``sct_threshold_of``): on any other loss it marks nothing the loss does.
DEFAULT_SCT_THRESHOLD = 0.8


def wrap(title: str, width: int = 60) -> str:
    """Titles name the loss with all its options: wrap each line rather than clip it."""
    return "\n".join(textwrap.fill(line, width) for line in title.split("\n"))


def new_figure(width: float = 5.0, height: float = 4.6, ncols: int = 1):
    """Fixed margins instead of ``tight_layout``: measuring every text extent made each figure
    cost ~1 s on a busy 2-core machine, and callbacks draw a few per epoch."""
    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
    fig.subplots_adjust(left=0.13 / ncols ** 0.5, right=0.97, bottom=0.12, top=0.83, wspace=0.3)
    return fig, list(axes[0])


def sct_threshold_of(loss) -> float | None:
    """The threshold of an SCT loss (its line goes on the triplet diagrams), None for any other loss."""
    from hardneg.losses.sct import SCTLoss

    return float(loss.threshold) if isinstance(loss, SCTLoss) else None


def draw_triplet_square(ax, threshold: float | None = None) -> None:
    """Axes of the paper's triplet diagram: S_ap on x, S_an on y, both in [-1, 1].

    Points above the diagonal are hard (the negative is more similar than the positive); the
    diagonal is always drawn, the line S_an = ``threshold`` only when one is given (SCT runs).
    """
    ax.plot([-1, 1], [-1, 1], color="black", lw=1.0, ls="-", label="S_an = S_ap")
    if threshold is not None:
        ax.axhline(threshold, color="tab:orange", lw=1.0, ls="--", label=f"SCT threshold {threshold:g}")
    ax.set_xlim(-1, 1)
    ax.set_ylim(-1, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("S_ap (anchor-positive similarity)")
    ax.set_ylabel("S_an (anchor-negative similarity)")


def annotate(ax, lines: list[str]) -> None:
    """A small text box in the lower-right corner (the easy region, usually emptier late in training)."""
    ax.text(
        0.98, 0.02, "\n".join(lines), transform=ax.transAxes, ha="right", va="bottom", fontsize=8,
        bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85, "edgecolor": "0.7"},
    )


def legend_below(fig, axes, bottom: float = 0.25, fontsize: int = 7):
    """One legend for all ``axes``, in the figure's bottom margin: curves span the whole height of
    their axes, so any legend inside them covers data somewhere. Raises the axes to make room."""
    handles, labels = [], []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    fig.subplots_adjust(bottom=bottom)
    return fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(labels), 5),
                      fontsize=fontsize, frameon=False)


def save_figure(fig, path: str | Path, dpi: int = 90) -> Path:
    """Write ``fig`` as PNG (creating folders) and free it: callbacks draw one per epoch."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
