"""Curves: their legends sit outside every axes, so they cover no data (checked on the laid-out artists)."""
import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.colors import to_hex

from hardneg.analysis.curves import make_collapse, make_hn_ratio, plot_collapse
from hardneg.analysis.triplet_diagram import TripletCounts


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def evaluations(n=11):
    """Curves that cross the whole [0, 1] range, where any legend inside the axes would cover one."""
    return [{"epoch": e, "geometry": {"mean_similarity": e / (n - 1), "dims_in_use": 1 - e / (n - 1),
                                      "effective_rank": 40.0 - e},
             "metrics": {"recall@1": 0.3 + e / 50}} for e in range(n)]


def assert_legend_outside_the_axes(fig, entries: set[str]):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (legend,) = fig.legends
    assert {t.get_text() for t in legend.get_texts()} == entries
    box = legend.get_window_extent(renderer)
    for ax in fig.axes:
        assert ax.get_legend() is None
        assert not box.overlaps(ax.get_window_extent(renderer)), "the legend covers an axes"
        assert not box.overlaps(ax.xaxis.label.get_window_extent(renderer)), "the legend covers an axis label"
    assert box.y0 >= 0 and box.x0 >= 0 and box.x1 <= fig.bbox.width, "the legend is cut off"
    styles = [(to_hex(h.get_color()), h.get_linestyle()) for h in legend.legend_handles]
    assert len(set(styles)) == len(styles), "one legend for all panels: two entries look the same"


def test_collapse_legend_covers_no_data():
    fig = make_collapse(evaluations(), "t", threshold=0.9)
    assert_legend_outside_the_axes(
        fig, {"mean similarity", "dims in use", "R@1", "collapse threshold 0.9", "effective rank"})


def test_hn_ratio_legend_covers_no_data():
    counts = TripletCounts(threshold=0.8)
    counts.add(torch.rand(100, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    fig = make_hn_ratio([(1, counts), (2, counts)], "t")
    assert_legend_outside_the_axes(fig, {"hard (S_an > S_ap)", "S_an > 0.8", "mean S_ap", "mean S_an"})


def test_plot_collapse_writes_the_figure(tmp_path):
    path = plot_collapse(evaluations(), tmp_path / "sub" / "collapse.png")
    assert path.stat().st_size > 5_000
