"""In-batch triplet mining over one similarity matrix.

Every row of ``sim`` is an anchor; columns are the reference samples (the whole global batch
under DDP, the local batch otherwise). Mining only *chooses indices*: it runs without
gradient, and the loss later reads ``S_ap`` and ``S_an`` out of the same matrix, so the
similarity is computed once per step.

``reference_triplets`` is the definition: build the positive and negative masks, let the
positive strategy pick pairs, let the negative strategy pick a negative per pair. For the
built-in strategies on large matrices ``mine_triplets`` hands the same job to
``hardneg._fast``, which the tests hold equal to the definition.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from hardneg import _fast
from hardneg.mining.negatives import NEGATIVE_STRATEGIES
from hardneg.mining.positives import POSITIVE_STRATEGIES

# Similarities above this are treated as the same image (the official code skips them
# as positives: with padded classes the same file can appear twice in a batch).
DUPLICATE_SIMILARITY = 0.9999


@dataclass
class Triplets:
    """Index triplets into a similarity matrix: rows are anchors, columns references."""

    anchor: Tensor  # [T] row indices
    positive: Tensor  # [T] column indices
    negative: Tensor  # [T] column indices
    num_anchors: int  # rows offered to the miner (valid or not)

    def __len__(self) -> int:
        return int(self.anchor.numel())


def pair_masks(
    anchor_labels: Tensor,
    ref_labels: Tensor,
    self_index: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Boolean [A, M] masks of same-class (excluding the anchor itself) and other-class pairs."""
    same = anchor_labels[:, None] == ref_labels[None, :]
    other = ~same
    if self_index is not None:
        same[torch.arange(len(anchor_labels), device=same.device), self_index] = False
    return same, other


def default_self_index(sim: Tensor, offset: int = 0) -> Tensor:
    """Column of each anchor when the anchors are the references ``offset:offset+A``."""
    return torch.arange(sim.shape[0], device=sim.device) + offset


def check_strategies(pos: str, neg: str) -> None:
    if pos not in POSITIVE_STRATEGIES:
        raise ValueError(f"mining.pos={pos!r} is unknown; choose one of {sorted(POSITIVE_STRATEGIES)}")
    if neg not in NEGATIVE_STRATEGIES:
        raise ValueError(f"mining.neg={neg!r} is unknown; choose one of {sorted(NEGATIVE_STRATEGIES)}")


def reference_triplets(
    sim: Tensor,
    anchor_labels: Tensor,
    ref_labels: Tensor,
    self_index: Tensor | None = None,
    pos: str = "easy",
    neg: str = "hardest",
    duplicate_threshold: float = DUPLICATE_SIMILARITY,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """(anchor, positive, negative) by the definitions: the test reference of all mining."""
    sim = sim.detach()
    is_positive, is_negative = pair_masks(anchor_labels, ref_labels, self_index)
    is_positive &= sim < duplicate_threshold  # a near-duplicate is the same image, never a positive
    anchor, positive = POSITIVE_STRATEGIES[pos](sim, is_positive, generator)
    s_ap = sim[anchor, positive]
    negative, found = NEGATIVE_STRATEGIES[neg](sim, is_negative, anchor, s_ap, generator)
    if not bool(found.all()):  # pairs without a negative give no triplet
        keep = found.nonzero().squeeze(1)
        anchor, positive, negative = anchor[keep], positive[keep], negative[keep]
    return anchor, positive, negative


@torch.no_grad()
def mine_triplets(
    sim: Tensor,
    anchor_labels: Tensor,
    ref_labels: Tensor,
    self_index: Tensor | None = None,
    pos: str = "easy",
    neg: str = "hardest",
    duplicate_threshold: float = DUPLICATE_SIMILARITY,
    generator: torch.Generator | None = None,
    inplace: bool = False,
) -> Triplets:
    """Choose (anchor, positive, negative) index triplets from ``sim`` [A, M].

    ``self_index[i]`` is the column of anchor i itself (never its own positive); ``None``
    means the anchors are not among the references. An anchor without a usable positive or
    negative yields no triplet. ``inplace=True`` lets the fast path use ``sim`` as scratch
    space (restored bit for bit before returning): only for a matrix nothing else reads meanwhile.
    """
    check_strategies(pos, neg)
    if _fast.supports(pos, neg, sim):
        anchor, positive, negative = _fast.mine(sim, anchor_labels, ref_labels, self_index, pos, neg,
                                                duplicate_threshold, inplace)
    else:
        anchor, positive, negative = reference_triplets(sim, anchor_labels, ref_labels, self_index, pos, neg,
                                                        duplicate_threshold, generator)
    return Triplets(anchor, positive, negative, num_anchors=sim.shape[0])
