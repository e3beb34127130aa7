"""Margin triplet loss: the three distances by hand, reductions, and the sqrt at 0."""
from __future__ import annotations

import math

import pytest
import torch

from hardneg.losses import MarginTripletLoss

S_AP = torch.tensor([0.9, 0.5, 0.2], dtype=torch.float64)
S_AN = torch.tensor([0.1, 0.6, 0.15], dtype=torch.float64)


def test_cosine_distance_by_hand():
    # d = 1 - s: max(0, S_an - S_ap + m) with m = .2 -> max(0,-.6), .3, .15
    loss, stats = MarginTripletLoss(margin=0.2, distance="cosine")(S_AP, S_AN)
    assert loss.item() == pytest.approx((0 + 0.3 + 0.15) / 3, abs=1e-12)
    assert stats["active_triplets_ratio"].item() == pytest.approx(2 / 3)
    loss, _ = MarginTripletLoss(margin=0.2, distance="cosine", reduction="nonzero")(S_AP, S_AN)
    assert loss.item() == pytest.approx((0.3 + 0.15) / 2, abs=1e-12)


def test_euclidean_distances_of_unit_vectors_by_hand():
    # |a - p| = sqrt(2 - 2 S_ap) for unit vectors
    d_ap = [math.sqrt(2 - 2 * s) for s in S_AP.tolist()]
    d_an = [math.sqrt(2 - 2 * s) for s in S_AN.tolist()]
    expected = sum(max(0.0, p - n + 0.2) for p, n in zip(d_ap, d_an)) / 3
    loss, _ = MarginTripletLoss(margin=0.2, distance="euclidean")(S_AP, S_AN)
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    expected_sq = sum(max(0.0, (2 - 2 * p) - (2 - 2 * n) + 0.2) for p, n in zip(S_AP.tolist(), S_AN.tolist())) / 3
    loss, _ = MarginTripletLoss(margin=0.2, distance="squared_euclidean")(S_AP, S_AN)
    assert loss.item() == pytest.approx(expected_sq, abs=1e-12)


def test_euclidean_distance_matches_real_vectors():
    g = torch.Generator().manual_seed(0)
    a, p, n = torch.nn.functional.normalize(torch.randn(3, 8, 5, generator=g, dtype=torch.float64), dim=2)
    s_ap, s_an = (a * p).sum(1), (a * n).sum(1)
    expected = torch.relu((a - p).norm(dim=1) - (a - n).norm(dim=1) + 0.3).mean()
    loss, _ = MarginTripletLoss(margin=0.3)(s_ap, s_an)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-12)


def test_a_negative_identical_to_the_anchor_gives_a_finite_gradient():
    s_ap = torch.tensor([0.5], dtype=torch.float64, requires_grad=True)
    s_an = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)  # d_an = 0: sqrt's slope is infinite
    loss, _ = MarginTripletLoss()(s_ap, s_an)
    loss.backward()
    assert torch.isfinite(s_ap.grad).all() and torch.isfinite(s_an.grad).all()


@pytest.mark.parametrize("kwargs,key", [({"distance": "l1"}, "loss.distance"), ({"reduction": "sum"}, "loss.reduction"),
                                        ({"margin": -0.1}, "loss.margin")])
def test_invalid_options_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        MarginTripletLoss(**kwargs)
