"""Triplet diagrams: known points land in the right bins; test-split points match brute force;
the figures carry the artists a reader needs (checked on the artists, not on pixels)."""
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.collections import PathCollection

from hardneg.analysis.figures import sct_threshold_of
from hardneg.analysis.triplet_diagram import (
    HEAVY_BIN_SHARE,
    TripletCounts,
    best_match_points,
    heavy_bins,
    histogram,
    make_test_diagram,
    make_train_diagram,
    plot_test_diagram,
    plot_train_diagram,
)
from hardneg.losses import MarginTripletLoss, MultiSimilarityLoss, SCTLoss


def test_known_points_fall_in_the_right_bins():
    # 4 bins per axis: [-1,-.5) [-.5,0) [0,.5) [.5,1]; H[i, j] = S_ap bin i, S_an bin j.
    points = torch.tensor([[-0.9, -0.9], [0.1, 0.6], [0.1, 0.7], [1.0, 1.0], [-1.0, 1.0], [0.49, -0.01],
                           [float("nan"), 0.0]])
    h = histogram(points, bins=4)
    expected = torch.zeros(4, 4, dtype=torch.long)
    expected[0, 0], expected[2, 3], expected[3, 3], expected[0, 3], expected[2, 1] = 1, 2, 1, 1, 1
    assert torch.equal(h, expected)


def test_counts_accumulate_exact_shares_over_batches():
    counts = TripletCounts(bins=10, threshold=0.8)
    counts.add(torch.tensor([[0.5, 0.9], [0.9, 0.1]]))  # one hard (and above the threshold), one easy
    counts.add(torch.tensor([[0.2, 0.3], [0.0, -0.5]]))  # one hard, one easy
    counts.add(torch.zeros(0, 2))
    s = counts.summary()
    assert s["count"] == 4 and s["hn_ratio"] == 0.5 and s["above_threshold"] == 0.25
    assert abs(s["s_ap"] - 0.4) < 1e-6 and int(counts.hist.sum()) == 4
    again = TripletCounts.from_state_dict(counts.state_dict())
    assert again.summary() == s and torch.equal(again.hist, counts.hist)


def brute_force_points(e, labels, queries=None):
    e = F.normalize(e, dim=1)
    rows = range(len(e)) if queries is None else [i for i in range(len(e)) if queries[i]]
    refs = [j for j in range(len(e)) if queries is None or not queries[j]]
    out = []
    for i in rows:
        pos = [float(e[i] @ e[j]) for j in refs if j != i and labels[j] == labels[i]]
        neg = [float(e[i] @ e[j]) for j in refs if labels[j] != labels[i]]
        if pos and neg:
            out.append((max(pos), max(neg)))
    return torch.tensor(out)


def test_best_match_points_match_brute_force_in_chunks():
    g = torch.Generator().manual_seed(0)
    e, labels = torch.randn(23, 5, generator=g), torch.tensor([0, 0, 1, 1, 1, 2, 2, 3] * 2 + [4, 5, 5, 6, 6, 6, 7])
    points, correct = best_match_points(e, labels, chunk_size=4)
    expected = brute_force_points(e, labels)  # singleton classes 4 and 7 have no positive: dropped
    assert len(points) == 21
    torch.testing.assert_close(points, expected)
    assert torch.equal(correct, expected[:, 0] > expected[:, 1])


def test_best_match_points_query_vs_gallery():
    g = torch.Generator().manual_seed(1)
    e, labels = torch.randn(12, 4, generator=g), torch.tensor([0, 1, 2] * 4)
    is_query = torch.tensor([True] * 3 + [False] * 9)
    points, _ = best_match_points(e, labels, is_query)
    torch.testing.assert_close(points, brute_force_points(e, labels, is_query.tolist()))


def test_diagrams_are_written(tmp_path):
    g = torch.Generator().manual_seed(0)
    points = torch.rand(500, 2, generator=g) * 2 - 1
    counts = TripletCounts()
    counts.add(points)
    train = plot_train_diagram(counts, tmp_path / "train.png", "train")
    test = plot_test_diagram(points, points[:, 0] > points[:, 1], tmp_path / "sub" / "test.png", "test")
    assert train.stat().st_size > 10_000 and test.stat().st_size > 10_000


# -- what the figures show ---------------------------------------------------------------------
def spread_points(n=600, seed=0):
    return torch.rand(n, 2, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def collapsed_points(n=1000, stray=50):
    """Nearly every anchor at exactly (1, 1), the state a collapsed embedding leaves; a few elsewhere."""
    points = torch.ones(n, 2)
    points[:stray] = spread_points(stray, seed=1)
    return points


def horizontal_lines_at(ax, y: float) -> list:
    return [line for line in ax.get_lines() if np.allclose(line.get_ydata(), y) and len(set(line.get_xdata())) > 1]


def has_diagonal(ax) -> bool:
    return any(np.allclose(line.get_xdata(), [-1, 1]) and np.allclose(line.get_ydata(), [-1, 1])
               for line in ax.get_lines())


def diagram_axes(fig):
    """The diagram's axes (the others are colour bars)."""
    return next(ax for ax in fig.axes if ax.get_xlabel().startswith("S_ap"))


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_sct_threshold_of_names_only_the_sct_loss():
    assert sct_threshold_of(SCTLoss(threshold=0.7)) == 0.7
    assert sct_threshold_of(MarginTripletLoss()) is None
    assert sct_threshold_of(MultiSimilarityLoss()) is None  # has a duplicate_threshold, not an SCT one


@pytest.mark.parametrize("threshold", [0.7, None])
def test_test_diagram_draws_the_threshold_line_only_for_sct(threshold):
    points = spread_points()
    ax = diagram_axes(make_test_diagram(points, points[:, 0] > points[:, 1], "t", threshold))
    assert has_diagonal(ax)  # S_an = S_ap, for every loss
    assert len(horizontal_lines_at(ax, 0.7)) == (1 if threshold is not None else 0)
    texts = " ".join(t.get_text() for t in ax.texts)
    assert ("S_an > 0.7" in texts) == (threshold is not None)


@pytest.mark.parametrize("sct", [True, False])
def test_train_diagram_draws_the_threshold_line_only_for_sct(sct):
    counts = TripletCounts(threshold=0.6, sct=sct)
    counts.add(spread_points())
    ax = diagram_axes(make_train_diagram(counts, "t"))
    assert has_diagonal(ax)
    assert len(horizontal_lines_at(ax, 0.6)) == (1 if sct else 0)
    assert counts.summary()["above_threshold"] > 0  # the share is still counted for every loss


def test_test_diagram_has_a_colour_scale_of_counts_that_starts_visible():
    points = spread_points(2000)
    correct = points[:, 0] > points[:, 1]
    fig = make_test_diagram(points, correct, "t")
    images = diagram_axes(fig).images
    assert len(images) == 2 and all(image.colorbar is not None for image in images)
    largest = max(int(histogram(points[correct]).max()), int(histogram(points[~correct]).max()))
    for image in images:
        assert image.norm.vmin == 1 and image.norm.vmax == largest  # counts per bin, one scale for both
        lowest = np.array(image.cmap(image.norm(1.0))[:3])
        assert lowest.min() < 0.8, f"a bin with one anchor is drawn near-white: {lowest}"
    assert any("per bin" in bar.get_ylabel() for bar in fig.axes if bar is not diagram_axes(fig))


def test_train_diagram_has_a_colour_scale_of_counts():
    counts = TripletCounts()
    counts.add(spread_points())
    (image,) = diagram_axes(make_train_diagram(counts, "t")).images
    assert image.colorbar is not None and image.norm.vmax == int(counts.hist.max())


def test_heavy_bins_are_the_bins_above_the_share_heaviest_first():
    hist = torch.zeros(4, 4, dtype=torch.long)
    hist[3, 3], hist[0, 1], hist[2, 2] = 70, 25, 5  # shares 0.7, 0.25, 0.05
    assert heavy_bins(hist, share=0.1) == [(0.75, 0.75, 0.7), (-0.75, -0.25, 0.25)]
    assert heavy_bins(hist, share=0.1, limit=1) == [(0.75, 0.75, 0.7)]
    assert heavy_bins(torch.zeros(4, 4, dtype=torch.long)) == []


def marked(ax):
    """(marker centres, labels) of the heavy-bin overlay."""
    circles = [c for c in ax.collections if isinstance(c, PathCollection)]
    centres = np.concatenate([c.get_offsets() for c in circles]) if circles else np.zeros((0, 2))
    notes = [t for t in ax.texts if "in this bin" in t.get_text()]
    return circles, centres, notes


def test_a_collapsed_test_diagram_marks_its_one_bin_at_1_1():
    points = collapsed_points()
    ax = diagram_axes(make_test_diagram(points, points[:, 0] > points[:, 1], "t", bins=50))
    circles, centres, notes = marked(ax)
    corner = 1 - 1 / 50  # centre of the last of 50 bins
    np.testing.assert_allclose(centres, [[corner, corner]])
    assert not circles[0].get_clip_on()  # the whole circle shows, though its bin touches the frame
    (note,) = notes
    assert note.get_text() == "95% of anchors in this bin"
    np.testing.assert_allclose(note.xy, (corner, corner))


def test_a_collapsed_train_diagram_marks_its_bin_too():
    counts = TripletCounts(bins=20)
    counts.add(collapsed_points(400, stray=100))
    _, centres, notes = marked(diagram_axes(make_train_diagram(counts, "t")))
    np.testing.assert_allclose(centres, [[0.95, 0.95]])
    assert [n.get_text() for n in notes] == ["75% of triplets in this bin"]


def test_a_spread_diagram_marks_nothing():
    points = spread_points(2000)
    assert max(share for *_, share in heavy_bins(histogram(points), share=0)) < HEAVY_BIN_SHARE
    _, centres, notes = marked(diagram_axes(make_test_diagram(points, points[:, 0] > points[:, 1], "t")))
    assert len(centres) == 0 and notes == []
