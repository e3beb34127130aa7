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


# -- cross-batch memory: in-batch and bank negatives apart --------------------------------------
def fabricated_bank_stats(steps=3, n=200, seed=0):
    """Per step: points and a bank flag; bank negatives are made harder (S_an shifted up)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        points = torch.rand(n, 2, generator=g) * 1.2 - 0.6
        flag = torch.rand(n, generator=g) < 0.6
        points[flag, 1] += 0.4
        out.append((points, flag))
    return out


def test_bank_counts_are_the_flagged_triplets_and_in_batch_the_rest():
    steps = fabricated_bank_stats()
    counts = TripletCounts(bins=8, threshold=0.5)
    for points, flag in steps:
        counts.add(points, flag)
    points, flag = torch.cat([p for p, _ in steps]), torch.cat([f for _, f in steps])
    for part, where in ((counts.bank, flag), (counts.in_batch(), ~flag)):
        chosen = points[where]
        assert part.count == len(chosen) and torch.equal(part.hist, histogram(chosen, 8))
        assert part.hard == int((chosen[:, 1] > chosen[:, 0]).sum())
        assert part.above_threshold == int((chosen[:, 1] > 0.5).sum())
        assert abs(part.sum_an - float(chosen[:, 1].sum())) < 1e-3
    s = counts.summary()  # the totals stay those of every triplet, as without memory
    assert s["count"] == len(points) and s["hn_ratio"] == pytest.approx(float((points[:, 1] > points[:, 0]).float().mean()))
    assert s["bank_negative_share"] == pytest.approx(float(flag.float().mean()))
    hard = points[:, 1] > points[:, 0]
    assert s["hn_ratio_bank"] == pytest.approx(float(hard[flag].float().mean()))
    assert s["hn_ratio_batch"] == pytest.approx(float(hard[~flag].float().mean()))
    assert s["hn_ratio_bank"] > s["hn_ratio_batch"]  # the fabricated bank negatives are the harder ones


def test_without_bank_flags_nothing_changes_and_old_states_load():
    counts = TripletCounts(bins=4)
    counts.add(spread_points(50))
    assert counts.bank is None and set(counts.summary()) == {"count", "hn_ratio", "above_threshold", "s_ap", "s_an"}
    state = counts.state_dict()
    del state["bank"]  # saved before the memory existed
    assert TripletCounts.from_state_dict(state).bank is None


def test_bank_counts_survive_their_state_dict_and_a_wrong_flag_is_refused():
    counts = TripletCounts(bins=6)
    for points, flag in fabricated_bank_stats(steps=2, n=40):
        counts.add(points, flag)
    again = TripletCounts.from_state_dict(counts.state_dict())
    assert again.summary() == counts.summary() and torch.equal(again.bank.hist, counts.bank.hist)
    counts.add(torch.zeros(0, 2), torch.zeros(0, dtype=torch.bool))  # an empty step with the flag: fine
    with pytest.raises(ValueError, match="one flag per triplet"):
        counts.add(torch.zeros(3, 2), torch.zeros(2, dtype=torch.bool))


def test_a_step_with_bank_flags_but_no_bank_negative_still_opens_the_bank_panel():
    counts = TripletCounts(bins=4)
    counts.add(spread_points(10), torch.zeros(10, dtype=torch.bool))  # the bank was searched, lost every time
    s = counts.summary()
    assert counts.bank.count == 0 and s["bank_negative_share"] == 0 and np.isnan(s["hn_ratio_bank"])
    fig = make_train_diagram(counts, "train")
    assert [ax.get_gid() for ax in fig.axes if ax.get_xlabel().startswith("S_ap")] == ["in_batch", "bank"]


def test_train_diagram_with_bank_draws_in_batch_and_bank_panels_on_one_scale():
    counts = TripletCounts(bins=10, sct=True, threshold=0.8)
    for points, flag in fabricated_bank_stats():
        counts.add(points, flag)
    fig = make_train_diagram(counts, "mined training triplets, epoch 1")
    panels = {ax.get_gid(): ax for ax in fig.axes if ax.get_xlabel().startswith("S_ap")}
    assert set(panels) == {"in_batch", "bank"}
    s = counts.summary()
    for key, part, ratio in (("in_batch", counts.in_batch(), s["hn_ratio_batch"]),
                             ("bank", counts.bank, s["hn_ratio_bank"])):
        ax = panels[key]
        (image,) = ax.get_images()
        shown = np.ma.filled(image.get_array(), 0).T  # drawn transposed (rows are S_an), empty bins masked
        assert np.array_equal(shown, part.hist.numpy())
        assert image.norm.vmax == float(max(counts.bank.hist.max(), counts.in_batch().hist.max()))
        texts = " ".join(t.get_text() for t in ax.texts)
        assert f"hard (S_an > S_ap): {ratio:.1%}" in texts and f"triplets: {part.count} (" in texts
        assert horizontal_lines_at(ax, 0.8) and has_diagonal(ax)
    assert panels["bank"].get_title() == "negative from the memory bank"
    assert f"hard {s['hn_ratio']:.1%}" in fig._suptitle.get_text()


def test_train_diagram_without_bank_keeps_one_panel():
    counts = TripletCounts(bins=10)
    counts.add(spread_points())
    fig = make_train_diagram(counts, "train")
    assert len([ax for ax in fig.axes if ax.get_xlabel().startswith("S_ap")]) == 1
    assert fig._suptitle is None
