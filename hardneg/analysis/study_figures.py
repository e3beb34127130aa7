"""Figures across the runs of a study: the paper's comparisons, one image each.

- R@1 bars per method, mean ± std over seeds, beside the epoch-0 value;
- hn_ratio curves per method overlaid (mean over seeds, band = min..max);
- a grid of test triplet diagrams, method (rows) × evaluation epoch (columns), one seed;
- the runs' own gradient-field figures side by side.
Inputs are ``hardneg.study.runs.RunRecord`` lists grouped by method.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from hardneg.analysis.figures import draw_triplet_square, plt, save_figure
from hardneg.analysis.triplet_diagram import histogram


def plot_recall_bars(groups: dict, path: str | Path, metric: str = "recall@1", title: str = "") -> Path:
    methods = list(groups)
    final = [[r.final[metric] for r in groups[m] if metric in r.final] for m in methods]
    start = [[r.initial[metric] for r in groups[m] if metric in r.initial] for m in methods]
    x = np.arange(len(methods))
    fig, ax = plt.subplots(figsize=(1.1 * len(methods) + 4, 4))
    mean = [np.mean(v) if v else np.nan for v in final]
    std = [np.std(v, ddof=1) if len(v) > 1 else 0 for v in final]
    ax.bar(x, mean, yerr=std, capsize=4, color="tab:blue", alpha=0.8, label="end of training (mean ± std)")
    for i, v in enumerate(final):  # the seeds themselves: spread is visible, not only summarised
        ax.scatter(np.full(len(v), i), v, color="black", s=10, zorder=3)
    e0 = [np.mean(v) if v else np.nan for v in start]
    ax.scatter(x, e0, marker="_", s=600, color="tab:red", zorder=4, label="epoch 0")
    ax.set_xticks(x, methods, rotation=20)
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} per method, {max(len(v) for v in final)} seeds", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.subplots_adjust(left=0.1, right=0.72, bottom=0.2)
    return save_figure(fig, path)


def plot_hn_ratio_curves(groups: dict, path: str | Path, title: str = "") -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (method, runs) in enumerate(groups.items()):
        curves = [dict(r.hn_ratio) for r in runs if r.hn_ratio]
        if not curves:
            continue
        epochs = sorted(set.intersection(*(set(c) for c in curves)))
        values = np.array([[c[e] for e in epochs] for c in curves])
        colour = f"C{i}"
        ax.plot(epochs, values.mean(0), color=colour, label=method, lw=2 if method in ("hn", "shn", "sct") else 1)
        ax.fill_between(epochs, values.min(0), values.max(0), color=colour, alpha=0.15)
    ax.set_xlabel("epoch")
    ax.set_ylabel("hn_ratio (share of mined triplets with S_an > S_ap)")
    ax.set_ylim(0, 1)
    ax.set_title(title or "hard-triplet share over training (mean over seeds, band = min..max)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.subplots_adjust(right=0.75)
    return save_figure(fig, path)


def plot_triplet_grid(groups: dict, path: str | Path, seed: int | None = None, bins: int = 40) -> Path:
    """Test triplet diagrams of one seed per method (rows) at every evaluation (columns).

    Blue: nearest neighbour correct; red: wrong. A log colour scale, so that a collapsed
    run's single crowded bin near (1, 1) stands out instead of vanishing.
    """
    from matplotlib.colors import LogNorm

    from hardneg.analysis.artifacts import load_test_evals

    rows = []
    for method, runs in groups.items():
        pick = [r for r in runs if seed is None or r.seed == seed] or runs
        rows.append((method, pick[0], load_test_evals(pick[0].run_dir)))
    ncols = max((len(e) for _, _, e in rows), default=1)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(2.2 * ncols + 1.0, 2.2 * len(rows) + 0.6), squeeze=False)
    for i, (method, _run, evals) in enumerate(rows):
        for j in range(ncols):
            ax = axes[i][j]
            if j >= len(evals):
                ax.axis("off")
                continue
            ev = evals[j]
            points, correct = ev["points"].float(), ev["correct"].bool()
            for mask, cmap in ((correct, "Blues"), (~correct, "Reds")):
                h = histogram(points[mask], bins).numpy().T.astype(float)
                ax.imshow(np.ma.masked_equal(h, 0), origin="lower", extent=(-1, 1, -1, 1), cmap=cmap,
                          norm=LogNorm(vmin=0.3, vmax=max(len(points) / 4, 2)), interpolation="nearest")
            mark_crowded_bin(ax, points, bins)
            draw_triplet_square(ax, 0.8 if method == "sct" else None)
            ax.set_xlabel("")
            ax.set_ylabel(method if j == 0 else "", fontsize=10, fontweight="bold")
            ax.tick_params(labelsize=6)
            r1 = ev.get("metrics", {}).get("recall@1")
            ax.set_title(f"epoch {ev['epoch']}" + (f", R@1 {r1:.2f}" if r1 is not None else ""), fontsize=7)
    fig.suptitle(f"test triplet diagrams, seed {rows[0][1].seed}\nS_ap on x, S_an on y; blue: NN correct, red: wrong;"
                 " log colour scale", fontsize=9)
    fig.subplots_adjust(left=0.14, right=0.98, bottom=0.03, top=1 - 0.6 / (2.2 * len(rows) + 0.6),
                        wspace=0.25, hspace=0.35)
    return save_figure(fig, path)


def mark_crowded_bin(ax, points, bins: int, share: float = 0.95) -> None:
    """Circle and label a bin holding more than ``share`` of the anchors: a collapsed run's
    diagram is one bin at (1, 1), nearly invisible on its own."""
    if not len(points):
        return
    h = histogram(points, bins)
    top = int(h.argmax())
    if h.flatten()[top] / len(points) <= share:
        return
    i, j = divmod(top, bins)
    x, y = -1 + (i + 0.5) * 2 / bins, -1 + (j + 0.5) * 2 / bins
    ax.scatter([x], [y], s=180, facecolors="none", edgecolors="black", linewidths=1.5, zorder=5)
    ax.text(0.04, 0.5, f"collapsed:\n{float(h.flatten()[top]) / len(points):.0%} of anchors\nin one bin",
            transform=ax.transAxes, fontsize=7, va="center")


def tile_gradient_fields(groups: dict, path: str | Path) -> Path | None:
    """The gradient-field figure each run drew for its loss, one per method, side by side."""
    images = []
    for method, runs in groups.items():
        png = Path(runs[0].run_dir) / "figures" / "gradient_field.png"
        if png.exists():
            images.append((method, plt.imread(png)))
    if not images:
        return None
    cols = min(4, len(images))
    nrows = -(-len(images) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3.8 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (method, image) in zip(axes.flat, images):
        ax.imshow(image)
        ax.set_title(method, fontsize=10)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.95, wspace=0.02, hspace=0.08)
    return save_figure(fig, path, dpi=110)
