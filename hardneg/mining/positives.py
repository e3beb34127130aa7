"""Positive strategies: which same-class reference(s) each anchor is paired with.

A strategy is a function ``(sim, is_positive, generator) -> (anchor, positive)``:
``sim`` [A, M] is the similarity matrix (rows anchors, columns references) and ``is_positive``
[A, M] marks the usable positives (same class, not the anchor itself, not a near-duplicate).
It returns the chosen pairs as two index tensors, in row-major order; an anchor without a
usable positive gives no pair. Register a new one with ``@positive_strategy("name")``.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

POSITIVE_STRATEGIES: dict[str, Callable] = {}


def positive_strategy(name: str):
    """Register a positive strategy under ``name`` (then ``mining.pos=name`` selects it)."""

    def register(fn):
        POSITIVE_STRATEGIES[name] = fn
        return fn

    return register


def best_per_row(score: Tensor, allowed: Tensor) -> tuple[Tensor, Tensor]:
    """(rows, columns) of the highest ``score`` among the ``allowed`` entries of each row, for
    the rows that allow any; the first column on ties. ``score`` must be finite where allowed."""
    best, cols = score.masked_fill(~allowed, float("-inf")).max(dim=1)
    rows = (best > float("-inf")).nonzero().squeeze(1)
    return rows, cols[rows]


@positive_strategy("easy")
def easy_positive(sim, is_positive, generator=None):
    """The most similar positive (Xuan et al., WACV 2020, used by the SCT paper)."""
    return best_per_row(sim, is_positive)


@positive_strategy("hard")
def hard_positive(sim, is_positive, generator=None):
    """The least similar positive."""
    return best_per_row(-sim, is_positive)


@positive_strategy("random")
def random_positive(sim, is_positive, generator=None):
    """A uniformly random positive: the one with the highest uniform random score."""
    return best_per_row(random_scores(sim, generator), is_positive)


@positive_strategy("all")
def all_positives(sim, is_positive, generator=None):
    """Every usable positive of every anchor (one triplet per anchor-positive pair)."""
    anchor, positive = is_positive.nonzero().unbind(1)
    return anchor, positive


def random_scores(like: Tensor, generator=None) -> Tensor:
    """Uniform [0, 1) scores shaped like ``like``, drawn on the CPU so a seeded CPU generator
    gives the same draws on any device."""
    return torch.rand(like.shape, generator=generator, device="cpu").to(like.device)
