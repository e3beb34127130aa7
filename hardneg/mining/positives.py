"""Positive selection. Each strategy returns the indices of the chosen pairs in the list of
usable positives: one per anchor that has any (``all``: every pair).

Positives are sparse (a batch holds a few images per class), so the candidates come as a list
of (row, col, similarity) pairs, ``PositivePairs``, grouped by row with ascending columns,
instead of a masked copy of the whole [A, M] matrix: every strategy then costs O(pairs).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class PositivePairs:
    """Usable positives: same class, not the anchor itself, not a near-duplicate."""

    rows: Tensor  # [P] anchor rows, ascending
    cols: Tensor  # [P] reference columns, ascending within a row
    values: Tensor  # [P] their similarities
    num_rows: int  # A, the number of anchors


def best_per_row(pairs: PositivePairs, score: Tensor) -> Tensor:
    """For every row that has pairs: the pair with the highest ``score``, the first one (the
    lowest column) on ties, as ``argmax`` over the dense row would pick. Returns pair indices."""
    rows, n, num_pairs = pairs.rows, pairs.num_rows, len(pairs.rows)
    best = score.new_full((n,), float("-inf")).scatter_reduce(0, rows, score, "amax")
    position = torch.arange(num_pairs, device=rows.device)
    position = torch.where(score == best.index_select(0, rows), position, num_pairs)  # losers never the min
    first = position.new_full((n,), num_pairs).scatter_reduce(0, rows, position, "amin")
    return first.masked_select(first < num_pairs)


def easy_positive(pairs: PositivePairs, generator=None) -> Tensor:
    """The most similar positive (Xuan et al., WACV 2020, used by the SCT paper)."""
    return best_per_row(pairs, pairs.values)


def hard_positive(pairs: PositivePairs, generator=None) -> Tensor:
    """The least similar positive."""
    return best_per_row(pairs, -pairs.values)


def random_positive(pairs: PositivePairs, generator=None) -> Tensor:
    """A uniformly random positive: the pair with the highest uniform random score."""
    scores = torch.rand(pairs.values.shape, generator=generator, device="cpu").to(pairs.values.device)
    return best_per_row(pairs, scores)


def all_positives(pairs: PositivePairs, generator=None) -> Tensor:
    """Every usable positive of every anchor (one triplet per anchor-positive pair)."""
    return torch.arange(len(pairs.rows), device=pairs.rows.device)


POSITIVE_STRATEGIES = {
    "easy": easy_positive,
    "hard": hard_positive,
    "random": random_positive,
    "all": all_positives,
}
