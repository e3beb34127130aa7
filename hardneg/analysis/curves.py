"""Over-training curves: the hard-triplet ratio (the paper reports it falling from ~0.9 to
0.15-0.35 on CUB/Cars under SCT) and the collapse diagnostics of the test embeddings.

Their legends sit below the axes (``legend_below``): the curves span the whole [0, 1] range, so
a legend inside an axes covered some of them."""
from __future__ import annotations

from pathlib import Path

from hardneg.analysis.figures import legend_below, new_figure, save_figure, wrap
from hardneg.analysis.triplet_diagram import TripletCounts


def plot_hn_ratio(per_epoch: list[tuple[int, TripletCounts]], path: str | Path, title: str = "") -> Path:
    """hn_ratio, share above the SCT threshold, and mean S_ap / S_an of the mined triplets per epoch."""
    return save_figure(make_hn_ratio(per_epoch, title), path)


def make_hn_ratio(per_epoch: list[tuple[int, TripletCounts]], title: str = ""):
    """The hn_ratio figure as an open figure (see ``plot_hn_ratio``)."""
    epochs = [e for e, _ in per_epoch]
    summaries = [c.summary() for _, c in per_epoch]
    fig, (left, right) = new_figure(4.6, 3.6, ncols=2)
    left.plot(epochs, [s["hn_ratio"] for s in summaries], marker=".", label="hard (S_an > S_ap)")
    threshold = per_epoch[0][1].threshold if per_epoch else 0.8
    left.plot(epochs, [s["above_threshold"] for s in summaries], marker=".", label=f"S_an > {threshold:g}")
    left.set_ylim(-0.02, 1.02)
    left.set_ylabel("share of mined triplets")
    # Colours of their own: one legend serves both panels.
    right.plot(epochs, [s["s_ap"] for s in summaries], marker=".", color="tab:green", label="mean S_ap")
    right.plot(epochs, [s["s_an"] for s in summaries], marker=".", color="tab:red", label="mean S_an")
    right.set_ylim(-1.02, 1.02)
    right.set_ylabel("similarity")
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    legend_below(fig, (left, right))
    fig.suptitle(wrap(title or "mined training triplets", 110), fontsize=9)
    return fig


def plot_collapse(evaluations: list[dict], path: str | Path, title: str = "", threshold: float | None = None) -> Path:
    """Mean off-diagonal similarity, dims in use and Recall@1 (left); effective rank (right)."""
    return save_figure(make_collapse(evaluations, title, threshold), path)


def make_collapse(evaluations: list[dict], title: str = "", threshold: float | None = None):
    """The collapse figure as an open figure (see ``plot_collapse``)."""
    evaluations = sorted(evaluations, key=lambda e: e["epoch"])
    epochs = [e["epoch"] for e in evaluations]
    fig, (left, right) = new_figure(4.6, 3.6, ncols=2)
    left.plot(epochs, [e["geometry"]["mean_similarity"] for e in evaluations], marker="o", label="mean similarity")
    left.plot(epochs, [e["geometry"]["dims_in_use"] for e in evaluations], marker="s", label="dims in use")
    left.plot(epochs, [e["metrics"].get("recall@1", float("nan")) for e in evaluations], marker="^", label="R@1")
    if threshold is not None:
        left.axhline(threshold, color="tab:red", ls="--", lw=1, label=f"collapse threshold {threshold:g}")
    left.set_ylim(-0.05, 1.05)
    right.plot(epochs, [e["geometry"]["effective_rank"] for e in evaluations], marker="o", color="tab:purple",
               label="effective rank")
    right.set_ylabel("effective rank")
    right.set_ylim(bottom=0)
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    legend_below(fig, (left, right))
    fig.suptitle(wrap(title or "test embeddings", 110), fontsize=9)
    return fig
