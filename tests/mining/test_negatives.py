"""Negative strategies on hand-built similarity matrices and other-class masks."""
from __future__ import annotations

import torch

from hardneg.mining.negatives import easy_negative, hardest_negative, random_negative, semihard_negative

# 3 anchors x 5 references; NEG marks other-class references.
SIM = torch.tensor([
    [1.0, 0.6, 0.7, 0.2, -0.4],
    [0.6, 1.0, 0.5, 0.9, 0.1],
    [0.7, 0.5, 1.0, 0.3, 0.3],
])
NEG = torch.tensor([
    [0, 0, 1, 1, 1],   # negatives of 0: 2 (0.7), 3 (0.2), 4 (-0.4)
    [0, 0, 1, 1, 1],   # negatives of 1: 2 (0.5), 3 (0.9), 4 (0.1)
    [1, 1, 0, 1, 1],   # negatives of 2: 0 (0.7), 1 (0.5), 3 (0.3), 4 (0.3)
], dtype=torch.bool)
# (anchor, positive) pairs as a positive strategy would give them; anchor 2 appears twice
# (as with pos=all), with positives of different similarity.
ANCHOR = torch.tensor([0, 1, 2, 2])
POSITIVE = torch.tensor([1, 0, 1, 0])  # S_ap: 0.6, 0.6, 0.5, 0.7 -- column 1/0 reused as given


def neg_sim(sim=SIM, mask=NEG):
    """The (sim, is_negative) arguments of a strategy."""
    return sim, mask


def s_ap(sim=SIM):
    return sim[ANCHOR, POSITIVE]


def test_hardest_negative_is_the_most_similar_other_class_reference():
    n, found = hardest_negative(*neg_sim(), ANCHOR, s_ap())
    assert n.tolist() == [2, 3, 0, 0] and found.all()


def test_easy_negative_is_the_least_similar_other_class_reference():
    n, found = easy_negative(*neg_sim(), ANCHOR, s_ap())
    assert n.tolist() == [4, 4, 3, 3] and found.all()  # anchor 2: 3 and 4 tie at 0.3 -> first


def test_semihard_negative_is_the_hardest_still_below_the_positive():
    sim = SIM.clone()
    sim[2, 1] = 0.25  # anchor 2's first positive now has S_ap = 0.25: no negative below it
    n, found = semihard_negative(*neg_sim(sim), ANCHOR, s_ap(sim))
    # anchor 0, S_ap 0.6: 0.7 not allowed -> 3 (0.2); anchor 1, S_ap 0.6: 0.9 not allowed -> 2 (0.5)
    # anchor 2 with S_ap 0.25: none; with S_ap 0.7 (col 0 reused): 0.7 itself is not < 0.7 -> 3 (0.3)
    assert found.tolist() == [True, True, False, True]
    assert n[found].tolist() == [3, 2, 3]


def test_semihard_excludes_a_negative_exactly_as_similar_as_the_positive():
    sim = torch.tensor([[1.0, 0.5, 0.5]])
    n, found = semihard_negative(*neg_sim(sim, torch.tensor([[0, 0, 1]], dtype=torch.bool)),
                                 torch.tensor([0]), torch.tensor([0.5]))
    assert not found.item()


def test_anchor_without_any_negative_is_not_found():
    mask = NEG.clone()
    mask[1] = False
    for strategy in (hardest_negative, easy_negative, random_negative):
        _, found = strategy(*neg_sim(SIM, mask), ANCHOR, s_ap())
        assert found.tolist() == [True, False, True, True]


def test_random_negative_is_legal_independent_per_triplet_and_roughly_uniform():
    g = torch.Generator().manual_seed(0)
    draws = 4000
    anchor = torch.full((draws,), 2)  # one anchor offered many times: one independent draw each
    n, found = random_negative(*neg_sim(), anchor, torch.full((draws,), 0.5), generator=g)
    assert found.all() and NEG[anchor, n].all()
    counts = torch.bincount(n, minlength=5).float()
    # anchor 2 has 4 negatives (0, 1, 3, 4), each about 1000 of 4000 (binomial sd ~27)
    assert torch.all((counts[[0, 1, 3, 4]] - draws / 4).abs() < 140), counts
    n, found = random_negative(*neg_sim(), ANCHOR, s_ap(), generator=g)
    assert found.all() and NEG[ANCHOR, n].all()

