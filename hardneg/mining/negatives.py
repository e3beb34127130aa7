"""Negative strategies: which other-class reference each (anchor, positive) pair is given.

A strategy is a function ``(sim, is_negative, anchor, s_ap, generator) -> (negative, found)``:
``sim`` [A, M] is the similarity matrix, ``is_negative`` [A, M] marks other-class references,
``anchor`` [T] and ``s_ap`` [T] are the pairs' anchor rows and positive similarities. It returns
one negative column per pair and whether one was found; pairs without one give no triplet.
Register a new one with ``@negative_strategy("name")``; docs/extending.md shows a worked example.
"""
from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from hardneg.mining.positives import random_scores

NEGATIVE_STRATEGIES: dict[str, Callable] = {}


def negative_strategy(name: str):
    """Register a negative strategy under ``name`` (then ``mining.neg=name`` selects it)."""

    def register(fn):
        NEGATIVE_STRATEGIES[name] = fn
        return fn

    return register


def masked_argmax(score: Tensor, allowed: Tensor) -> tuple[Tensor, Tensor]:
    """(column of the highest ``score`` among the ``allowed`` entries of each row, whether the
    row allows any); the first column on ties. ``score`` must be finite where allowed."""
    best, column = score.masked_fill(~allowed, float("-inf")).max(dim=1)
    return column, best > float("-inf")


@negative_strategy("hardest")
def hardest_negative(sim, is_negative, anchor, s_ap, generator=None):
    """The most similar negative (found once per anchor row, then given to each of its pairs)."""
    column, found = masked_argmax(sim, is_negative)
    return column[anchor], found[anchor]


@negative_strategy("semihard")
def semihard_negative(sim, is_negative, anchor, s_ap, generator=None):
    """The most similar negative that is still less similar than the chosen positive.

    The paper's definition: negatives with S_an > S_ap are not allowed; an anchor whose every
    negative is harder than its positive gives no triplet. (The official code also allows
    S_an == S_ap exactly; "less similar" here is strict, a measure-zero difference.)
    """
    rows = sim[anchor]
    return masked_argmax(rows, is_negative[anchor] & (rows < s_ap[:, None]))


@negative_strategy("easy")
def easy_negative(sim, is_negative, anchor, s_ap, generator=None):
    """The least similar negative (found once per anchor row, then given to each of its pairs)."""
    column, found = masked_argmax(-sim, is_negative)
    return column[anchor], found[anchor]


@negative_strategy("random")
def random_negative(sim, is_negative, anchor, s_ap, generator=None):
    """A uniformly random negative, drawn independently for every triplet."""
    allowed = is_negative[anchor]
    return masked_argmax(random_scores(allowed, generator), allowed)
