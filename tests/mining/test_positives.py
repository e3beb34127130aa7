"""Positive strategies on a hand-built similarity matrix with its usable-positive mask."""
from __future__ import annotations

import torch

from hardneg.mining.positives import all_positives, easy_positive, hard_positive, random_positive

# 4 anchors x 5 references; usable positives:
#   anchor 0: columns 1 (0.9), 2 (0.2), 3 (0.5)  -> easy 1, hard 2
#   anchor 1: columns 0 (0.3), 4 (0.3)           -> a tie: easy and hard both take the first, 0
#   anchor 2: none                               -> no triplet
#   anchor 3: column 4 (-0.7)                    -> easy = hard = 4
SIM = torch.tensor([
    [1.0, 0.9, 0.2, 0.5, 0.95],
    [0.3, 1.0, 0.8, -0.2, 0.3],
    [0.1, 0.2, 1.0, 0.4, 0.0],
    [0.6, 0.7, 0.1, 1.0, -0.7],
])
IS_POSITIVE = torch.tensor([
    [0, 1, 1, 1, 0],
    [1, 0, 0, 0, 1],
    [0, 0, 0, 0, 0],
    [0, 0, 0, 0, 1],
], dtype=torch.bool)


def pairs(result):
    anchor, positive = result
    return anchor.tolist(), positive.tolist()


def test_easy_positive_is_the_most_similar_usable_one():
    assert pairs(easy_positive(SIM, IS_POSITIVE)) == ([0, 1, 3], [1, 0, 4])


def test_hard_positive_is_the_least_similar_usable_one():
    assert pairs(hard_positive(SIM, IS_POSITIVE)) == ([0, 1, 3], [2, 0, 4])


def test_all_positives_lists_every_pair_in_row_major_order():
    assert pairs(all_positives(SIM, IS_POSITIVE)) == ([0, 0, 0, 1, 1, 3], [1, 2, 3, 0, 4, 4])


def test_random_positive_is_legal_and_roughly_uniform():
    g = torch.Generator().manual_seed(0)
    assert pairs(random_positive(SIM, IS_POSITIVE, generator=g))[0] == [0, 1, 3]
    draws = 3000  # anchor 0's three candidates, offered as 3000 separate anchors: one draw each
    anchor, positive = random_positive(SIM[[0]].repeat(draws, 1), IS_POSITIVE[[0]].repeat(draws, 1), generator=g)
    assert torch.equal(anchor, torch.arange(draws))
    counts = torch.bincount(positive, minlength=5).float()
    # each about 1000 of 3000 (binomial sd ~26)
    assert torch.all((counts[[1, 2, 3]] - draws / 3).abs() < 150) and counts[[0, 4]].sum() == 0, counts


def test_random_positive_follows_the_generator():
    a = random_positive(SIM, IS_POSITIVE, generator=torch.Generator().manual_seed(5))
    b = random_positive(SIM, IS_POSITIVE, generator=torch.Generator().manual_seed(5))
    assert pairs(a) == pairs(b)


def test_no_usable_positive_gives_no_pair():
    none = torch.zeros_like(IS_POSITIVE)
    for strategy in (easy_positive, hard_positive, random_positive, all_positives):
        anchor, positive = strategy(SIM, none)
        assert anchor.numel() == 0 and positive.numel() == 0
