"""Positive selection: each returns (anchor rows, positive columns) for anchors that have one.

``mask`` [A, M] marks usable positives (same class, not the anchor, not a duplicate).
"""
from __future__ import annotations

import torch
from torch import Tensor


def _masked_argmax(values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Row-wise argmax among masked entries (first index on ties) and whether any existed."""
    filled = values.masked_fill(~mask, float("-inf"))
    return filled.argmax(dim=1), mask.any(dim=1)


def easy_positive(sim: Tensor, mask: Tensor, generator=None) -> tuple[Tensor, Tensor]:
    """The most similar positive (Xuan et al., WACV 2020, used by the SCT paper)."""
    idx, found = _masked_argmax(sim, mask)
    rows = torch.arange(sim.shape[0], device=sim.device)
    return rows[found], idx[found]


def hard_positive(sim: Tensor, mask: Tensor, generator=None) -> tuple[Tensor, Tensor]:
    """The least similar positive."""
    idx, found = _masked_argmax(-sim, mask)
    rows = torch.arange(sim.shape[0], device=sim.device)
    return rows[found], idx[found]


def random_positive(sim: Tensor, mask: Tensor, generator=None) -> tuple[Tensor, Tensor]:
    """A uniformly random positive (random scores masked, then argmax)."""
    scores = torch.rand(sim.shape, generator=generator, device="cpu").to(sim.device)
    idx, found = _masked_argmax(scores, mask)
    rows = torch.arange(sim.shape[0], device=sim.device)
    return rows[found], idx[found]


def all_positives(sim: Tensor, mask: Tensor, generator=None) -> tuple[Tensor, Tensor]:
    """Every usable positive of every anchor (one triplet per anchor-positive pair)."""
    rows, cols = mask.nonzero(as_tuple=True)
    return rows, cols


POSITIVE_STRATEGIES = {
    "easy": easy_positive,
    "hard": hard_positive,
    "random": random_positive,
    "all": all_positives,
}
