"""Triplet diagrams: known points land in the right bins; test-split points match brute force."""
import torch
import torch.nn.functional as F

from hardneg.analysis.triplet_diagram import (
    TripletCounts,
    best_match_points,
    histogram,
    plot_test_diagram,
    plot_train_diagram,
)


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
