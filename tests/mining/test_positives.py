"""Positive strategies on a hand-built list of usable positives."""
from __future__ import annotations

import torch

from hardneg.mining.positives import PositivePairs, all_positives, easy_positive, hard_positive, random_positive

# Usable positives of 4 anchors (rows ascending, columns ascending within a row):
#   anchor 0: columns 1 (0.9), 2 (0.2), 3 (0.5)  -> easy 1, hard 2
#   anchor 1: columns 0 (0.3), 4 (0.3)           -> a tie: easy and hard both take the first, 0
#   anchor 2: none                               -> no triplet
#   anchor 3: column 4 (-0.7)                    -> easy = hard = 4
PAIRS = PositivePairs(
    rows=torch.tensor([0, 0, 0, 1, 1, 3]),
    cols=torch.tensor([1, 2, 3, 0, 4, 4]),
    values=torch.tensor([0.9, 0.2, 0.5, 0.3, 0.3, -0.7]),
    num_rows=4,
)


def chosen(k):
    return PAIRS.rows[k].tolist(), PAIRS.cols[k].tolist()


def test_easy_positive_is_the_most_similar_usable_one():
    assert chosen(easy_positive(PAIRS)) == ([0, 1, 3], [1, 0, 4])


def test_hard_positive_is_the_least_similar_usable_one():
    assert chosen(hard_positive(PAIRS)) == ([0, 1, 3], [2, 0, 4])


def test_all_positives_lists_every_pair():
    assert chosen(all_positives(PAIRS)) == (PAIRS.rows.tolist(), PAIRS.cols.tolist())


def test_random_positive_is_legal_and_roughly_uniform():
    g = torch.Generator().manual_seed(0)
    assert chosen(random_positive(PAIRS, generator=g))[0] == [0, 1, 3]
    draws = 3000  # anchor 0's three candidates, offered as 3000 separate anchors: one draw each
    many = PositivePairs(torch.arange(draws).repeat_interleave(3), torch.tensor([1, 2, 3]).repeat(draws),
                         torch.tensor([0.9, 0.2, 0.5]).repeat(draws), num_rows=draws)
    k = random_positive(many, generator=g)
    assert torch.equal(many.rows[k], torch.arange(draws))
    counts = torch.bincount(many.cols[k], minlength=4).float()
    # each about 1000 of 3000 (binomial sd ~26)
    assert torch.all((counts[[1, 2, 3]] - draws / 3).abs() < 150), counts


def test_random_positive_follows_the_generator():
    a = random_positive(PAIRS, generator=torch.Generator().manual_seed(5))
    b = random_positive(PAIRS, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_no_pairs_gives_no_positive():
    empty = PositivePairs(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), torch.zeros(0), 3)
    for strategy in (easy_positive, hard_positive, random_positive, all_positives):
        assert strategy(empty).numel() == 0
