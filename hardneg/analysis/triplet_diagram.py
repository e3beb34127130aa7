"""The paper's triplet diagram: every triplet is a point (S_ap, S_an) in [-1, 1]².

Training diagrams accumulate a 2-D histogram of the mined triplets over an epoch (bounded
memory at any dataset size). Test diagrams take, for each test anchor, its most similar
positive and its most similar negative; the anchor's nearest neighbour is correct exactly
when that point lies below the diagonal, so the correct/wrong colouring and Recall@1 agree.

With a cross-batch memory (``memory=xbm``) a mined negative may come from the bank: the training
counts then also keep the bank-negative triplets apart (``TripletCounts.bank``) and the diagram
draws two panels, in-batch | bank negatives, each with its own hard share.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from hardneg.analysis.figures import DEFAULT_SCT_THRESHOLD, annotate, draw_triplet_square, new_figure, save_figure, wrap

DEFAULT_BINS = 50


def histogram(points: Tensor, bins: int = DEFAULT_BINS) -> Tensor:
    """Counts ``H[i, j]`` of points with S_ap in bin i and S_an in bin j; bins split [-1, 1]
    evenly, the edges 1.0 and -1.0 fall in the outer bins, NaN points are dropped."""
    points = points.detach().float()
    points = points[torch.isfinite(points).all(dim=1)]
    index = ((points.clamp(-1, 1) + 1) / 2 * bins).long().clamp(0, bins - 1)
    flat = index[:, 0] * bins + index[:, 1]
    return torch.bincount(flat, minlength=bins * bins).reshape(bins, bins).cpu()


@dataclass
class TripletCounts:
    """A triplet diagram's data, accumulated batch by batch: the histogram and exact shares.

    The totals always cover every mined triplet. ``bank`` is None unless some step flagged which
    negatives came from a cross-batch memory; it then holds the counts of those triplets alone (a
    subset of the totals), and ``in_batch()`` the rest.
    """

    bins: int = DEFAULT_BINS
    threshold: float = DEFAULT_SCT_THRESHOLD
    hist: Tensor = None
    count: int = 0
    hard: int = 0  # S_an > S_ap
    above_threshold: int = 0  # S_an > threshold
    sum_ap: float = 0.0
    sum_an: float = 0.0
    sct: bool = False  # the run's loss is SCT: its threshold line is drawn (the shares are kept for every loss)
    bank: TripletCounts | None = None  # the triplets whose negative came from the memory bank

    def __post_init__(self):
        if self.hist is None:
            self.hist = torch.zeros(self.bins, self.bins, dtype=torch.long)
        if isinstance(self.bank, dict):  # from a state dict (checkpoint or analysis file)
            self.bank = TripletCounts.from_state_dict(self.bank)

    def add(self, points: Tensor, bank_negative: Tensor | None = None) -> None:
        """Count ``points`` [T, 2]; ``bank_negative`` [T] (bool, from ``stats["bank_negative"]``)
        marks the triplets whose negative came from the memory bank."""
        points = points.detach().float().cpu()
        if bank_negative is not None:
            bank_negative = bank_negative.detach().cpu().bool()
            if bank_negative.shape != points.shape[:1]:
                raise ValueError(f"bank_negative has shape {tuple(bank_negative.shape)}, expected one flag per "
                                 f"triplet point ({len(points)})")
            if self.bank is None:
                self.bank = TripletCounts(self.bins, self.threshold, sct=self.sct)
            self.bank.add(points[bank_negative])
        if len(points) == 0:
            return
        self.hist += histogram(points, self.bins)
        self.count += len(points)
        self.hard += int((points[:, 1] > points[:, 0]).sum())
        self.above_threshold += int((points[:, 1] > self.threshold).sum())
        self.sum_ap += float(points[:, 0].sum())
        self.sum_an += float(points[:, 1].sum())

    def in_batch(self) -> TripletCounts:
        """The triplets whose negative came from the batch: the totals less the bank's."""
        bank = self.bank or TripletCounts(self.bins, self.threshold)
        return TripletCounts(
            self.bins, self.threshold, self.hist - bank.hist, self.count - bank.count, self.hard - bank.hard,
            self.above_threshold - bank.above_threshold, self.sum_ap - bank.sum_ap, self.sum_an - bank.sum_an,
            self.sct)

    def summary(self) -> dict[str, float]:
        n = max(self.count, 1)
        out = {
            "count": self.count, "hn_ratio": self.hard / n, "above_threshold": self.above_threshold / n,
            "s_ap": self.sum_ap / n, "s_an": self.sum_an / n,
        }
        if self.bank is not None:  # NaN where a side has no triplet (a ratio of nothing)
            batch = self.in_batch()
            out["bank_negative_share"] = self.bank.count / n
            out["hn_ratio_batch"] = batch.hard / batch.count if batch.count else float("nan")
            out["hn_ratio_bank"] = self.bank.hard / self.bank.count if self.bank.count else float("nan")
        return out

    def state_dict(self) -> dict:
        return {"bins": self.bins, "threshold": self.threshold, "hist": self.hist, "count": self.count,
                "hard": self.hard, "above_threshold": self.above_threshold, "sum_ap": self.sum_ap,
                "sum_an": self.sum_an, "sct": self.sct,
                "bank": None if self.bank is None else self.bank.state_dict()}

    @classmethod
    def from_state_dict(cls, state: dict) -> TripletCounts:
        # A state saved before the bank existed has no "bank" (None); one saved before the unused
        # "extra" field was dropped still has it: keep only the fields this version knows.
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in state.items() if key in known})


def best_match_points(
    embeddings: Tensor, labels: Tensor, is_query: Tensor | None = None, chunk_size: int = 1024
) -> tuple[Tensor, Tensor]:
    """(points [Q, 2], nn_correct [Q]) for every anchor that has a positive.

    Leave-one-out: anchors are all items, references all others. Query/gallery: anchors are
    the queries, references the gallery. Rows are processed ``chunk_size`` at a time so
    the full similarity matrix is never held (SOP has 60k test images).
    """
    from hardneg.metrics.ranking import rank

    e = torch.nn.functional.normalize(embeddings.detach().float(), dim=1)
    labels = labels.to(e.device)
    if is_query is not None:
        q = is_query.to(e.device).bool()
        ranking = rank(e[q], labels[q], e[~q], labels[~q], k=0, rank_limit=1, chunk_size=chunk_size)
    else:
        ranking = rank(e, labels, k=0, rank_limit=1, chunk_size=chunk_size)
    points = torch.stack([ranking.best_positive, ranking.best_negative], dim=1)
    points = points[torch.isfinite(points).all(dim=1)]  # anchors with no positive (or no negative)
    return points.cpu(), (points[:, 0] > points[:, 1]).cpu()


# A bin holding at least this share of all points is circled and labelled with its share. A
# collapsed embedding puts nearly every point into the one bin at (1, 1): a square 2 / bins wide in
# the corner, half under the frame and the diagonal, which the colours alone leave nearly invisible.
HEAVY_BIN_SHARE = 0.1
MAX_MARKED_BINS = 3  # the heaviest ones; more labels would cover each other
# Lowest point of the Blues/Reds colour maps used for one count: their true start is near-white,
# so bins holding a few test anchors would vanish on the white background.
LOWEST_VISIBLE_COLOUR = 0.3


def visible_cmap(name: str, low: float = LOWEST_VISIBLE_COLOUR):
    """Colour map ``name`` without its lowest ``low`` share (which is too pale to see)."""
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap

    return ListedColormap(colormaps[name](np.linspace(low, 1.0, 256)), name=f"{name}_visible")


def _draw_histogram(ax, hist: Tensor, cmap, vmax: float):
    from matplotlib.colors import LogNorm

    counts = np.ma.masked_equal(hist.numpy().T.astype(float), 0)  # rows of the image are S_an
    return ax.imshow(counts, origin="lower", extent=(-1, 1, -1, 1), cmap=cmap, norm=LogNorm(vmin=1, vmax=max(vmax, 1)),
                     interpolation="nearest", aspect="equal")


def heavy_bins(hist: Tensor, share: float = HEAVY_BIN_SHARE, limit: int = MAX_MARKED_BINS) -> list[tuple[float, float, float]]:
    """(S_ap centre, S_an centre, share of all points) of the bins holding >= ``share`` of the
    points, heaviest first, at most ``limit``."""
    total = int(hist.sum())
    if total == 0:
        return []
    bins = hist.shape[0]
    flat = hist.flatten()
    order = torch.argsort(flat, descending=True, stable=True)[:limit]
    centre = lambda i: -1 + (i + 0.5) * 2 / bins  # noqa: E731
    return [(centre(int(k) // bins), centre(int(k) % bins), int(flat[k]) / total)
            for k in order if int(flat[k]) / total >= share]


def mark_heavy_bins(ax, hist: Tensor, what: str, share: float = HEAVY_BIN_SHARE) -> list:
    """Circle the heaviest bins (see ``HEAVY_BIN_SHARE``) and write "n% of <what> in this bin" beside
    each; returns the annotations. The circle is not clipped, so a corner bin shows whole."""
    marked = heavy_bins(hist, share)
    if not marked:
        return []
    x, y, _ = zip(*marked, strict=True)
    # No legend entry: the label beside each circle says what it marks.
    ax.scatter(x, y, s=260, facecolors="none", edgecolors="magenta", linewidths=2.0, zorder=6, clip_on=False)
    notes = []
    for i, (cx, cy, fraction) in enumerate(marked):
        # The label goes towards the centre of the square, where it cannot leave the axes.
        dx, dy = (-1 if cx > 0 else 1), (-1 if cy > 0 else 1)
        notes.append(ax.annotate(
            f"{fraction:.0%} of {what} in this bin", xy=(cx, cy), xytext=(15 * dx, (45 + 20 * i) * dy),
            textcoords="offset points", ha="right" if dx < 0 else "left", va="top" if dy < 0 else "bottom",
            fontsize=8, zorder=7,
            color="black", arrowprops={"arrowstyle": "->", "color": "magenta", "lw": 1.2},
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.9, "edgecolor": "magenta"}))
    return notes


def plot_train_diagram(counts: TripletCounts, path: str | Path, title: str) -> Path:
    """Histogram of an epoch's mined training triplets, hard share annotated."""
    return save_figure(make_train_diagram(counts, title), path)


def make_train_diagram(counts: TripletCounts, title: str):
    """The training diagram as an open figure; the SCT threshold line only when ``counts.sct``.
    With bank negatives counted (``counts.bank``) it has two panels, see ``make_bank_diagram``."""
    if counts.bank is not None:
        return make_bank_diagram(counts, title)
    fig, (ax,) = new_figure()
    image = _draw_histogram(ax, counts.hist, "viridis", float(counts.hist.max()))
    colorbar = fig.colorbar(image, ax=ax, shrink=0.8, label="triplets per bin")
    colorbar.ax.minorticks_off()  # dozens of log-scale minor labels, slow to lay out and unread
    draw_triplet_square(ax, counts.threshold if counts.sct else None)
    mark_heavy_bins(ax, counts.hist, "triplets")
    annotate(ax, _train_lines(counts))
    ax.legend(loc="upper left", fontsize=7)
    ax.set_title(wrap(title), fontsize=9)
    return fig


def _train_lines(counts: TripletCounts, total: int | None = None) -> list[str]:
    """The text box of a training diagram (panel); ``total``: all triplets, when this is a part of them."""
    s = counts.summary()
    share = f" ({counts.count / total:.1%} of all)" if total else ""
    lines = [f"triplets: {s['count']}{share}", f"hard (S_an > S_ap): {s['hn_ratio']:.1%}"]
    if counts.count:  # means of nothing would read "nan"
        lines.append(f"mean S_ap {s['s_ap']:.3f}, S_an {s['s_an']:.3f}")
    if counts.sct:
        lines.insert(2, f"S_an > {counts.threshold:g}: {s['above_threshold']:.1%}")
    return lines


BANK_PANELS = (("in_batch", "negative from the batch", "in-batch triplets"),
               ("bank", "negative from the memory bank", "bank triplets"))


def make_bank_diagram(counts: TripletCounts, title: str):
    """Two panels, in-batch | bank negatives, on one log colour scale so their densities compare;
    each panel's text box gives its triplet count, share of all and hn_ratio. Axes carry the
    ``gid`` ``"in_batch"`` / ``"bank"``."""
    parts = {"in_batch": counts.in_batch(), "bank": counts.bank}
    vmax = float(max(part.hist.max() for part in parts.values()))
    fig, axes = new_figure(ncols=2)
    fig.subplots_adjust(top=0.78)  # room for the figure title above the panel titles
    for ax, (key, heading, what) in zip(axes, BANK_PANELS, strict=True):
        part = parts[key]
        ax.set_gid(key)
        image = _draw_histogram(ax, part.hist, "viridis", vmax)
        draw_triplet_square(ax, counts.threshold if counts.sct else None)
        mark_heavy_bins(ax, part.hist, what)
        annotate(ax, _train_lines(part, counts.count))
        ax.set_title(heading, fontsize=9)
    colorbar = fig.colorbar(image, ax=axes, shrink=0.8, label="triplets per bin")
    colorbar.ax.minorticks_off()
    axes[0].legend(loc="upper left", fontsize=7)
    s = counts.summary()
    fig.suptitle(wrap(f"{title}\nall {counts.count} triplets: hard {s['hn_ratio']:.1%}", 110), fontsize=9)
    return fig


def plot_test_diagram(
    points: Tensor, correct: Tensor, path: str | Path, title: str,
    threshold: float | None = None, bins: int = DEFAULT_BINS,
) -> Path:
    """Test anchors' (best positive, best negative) similarities: blue where the nearest
    neighbour is correct, red where it is not. ``threshold``: the run's SCT threshold, drawn as
    a line; None (any other loss) draws none."""
    return save_figure(make_test_diagram(points, correct, title, threshold, bins), path)


def draw_test_diagram(ax, points: Tensor, correct: Tensor, threshold: float | None = None,
                      bins: int = DEFAULT_BINS) -> tuple:
    """The test diagram's data on ``ax`` (also one cell of a grid of diagrams): blue and red count
    histograms on one log scale, the square (threshold line for SCT only), heavy bins marked.
    Returns the (correct, wrong) images, for colour bars."""
    points, correct = points.float(), correct.bool()
    right, wrong = histogram(points[correct], bins), histogram(points[~correct], bins)
    vmax = float(max(right.max(), wrong.max())) if len(points) else 1.0
    right_image = _draw_histogram(ax, right, visible_cmap("Blues"), vmax)
    wrong_image = _draw_histogram(ax, wrong, visible_cmap("Reds"), vmax)
    draw_triplet_square(ax, threshold)
    mark_heavy_bins(ax, right + wrong, "anchors")
    return right_image, wrong_image


def make_test_diagram(points: Tensor, correct: Tensor, title: str, threshold: float | None = None,
                      bins: int = DEFAULT_BINS):
    """The test diagram as an open figure, with its colour scale and shares."""
    points, correct = points.float(), correct.bool()
    fig, (ax,) = new_figure(5.8)
    right_image, wrong_image = draw_test_diagram(ax, points, correct, threshold, bins)
    # Both maps share one log norm: the red bar carries no ticks, the blue one reads for both.
    wrong_bar = fig.colorbar(wrong_image, ax=ax, shrink=0.8, pad=0.02, fraction=0.04)
    wrong_bar.ax.tick_params(which="both", right=False, labelright=False)
    right_bar = fig.colorbar(right_image, ax=ax, shrink=0.8, pad=0.01, fraction=0.04,
                             label="test anchors per bin")
    right_bar.ax.minorticks_off()
    n = max(len(points), 1)
    ties = int((points[:, 0] == points[:, 1]).sum())
    mean_ap, mean_an = (float(points[:, i].mean()) if len(points) else float("nan") for i in (0, 1))
    lines = [f"anchors: {len(points)}", f"NN correct (blue): {float(correct.sum()) / n:.1%}",
             f"NN wrong or tied (red): {float((~correct).sum()) / n:.1%}",
             f"hard (S_an > S_ap): {float((points[:, 1] > points[:, 0]).sum()) / n:.1%}",
             f"mean S_ap {mean_ap:.3f}, S_an {mean_an:.3f}"]
    if threshold is not None:
        lines.insert(4, f"S_an > {threshold:g}: {float((points[:, 1] > threshold).sum()) / n:.1%}")
    if ties:  # exact ties happen when the embedding has collapsed: neither correct nor hard
        lines.insert(4, f"ties (S_an = S_ap): {ties / n:.1%}")
    annotate(ax, lines)
    ax.legend(loc="upper left", fontsize=7)
    ax.set_title(wrap(title), fontsize=9)
    return fig
