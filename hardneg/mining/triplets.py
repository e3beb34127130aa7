"""In-batch triplet mining over one similarity matrix.

Every row of ``sim`` is an anchor; columns are the reference samples (the whole
global batch under DDP, the local batch otherwise). Mining only *chooses indices*:
it runs without gradient, and the loss later reads ``S_ap`` and ``S_an`` out of the
same matrix, so the similarity is computed once per step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from hardneg.mining.negatives import NEGATIVE_STRATEGIES, NOT_USABLE
from hardneg.mining.positives import POSITIVE_STRATEGIES, PositivePairs

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
    if self_index is not None:
        same[torch.arange(len(anchor_labels), device=same.device), self_index] = False
    return same, anchor_labels[:, None] != ref_labels[None, :]


def default_self_index(sim: Tensor, offset: int = 0) -> Tensor:
    """Column of each anchor when the anchors are the references ``offset:offset+A``."""
    return torch.arange(sim.shape[0], device=sim.device) + offset


def same_class_pairs(anchor_labels: Tensor, ref_labels: Tensor) -> tuple[Tensor, Tensor]:
    """All (row, col) with equal labels, rows ascending and columns ascending within a row.

    Built from sorted labels in O(M log M + pairs), never as an [A, M] mask.
    """
    sorted_labels, order = torch.sort(ref_labels, stable=True)
    anchor_labels = anchor_labels.to(sorted_labels.dtype)
    start = torch.searchsorted(sorted_labels, anchor_labels, side="left")
    counts = torch.searchsorted(sorted_labels, anchor_labels, side="right") - start
    ends = torch.cumsum(counts, 0)
    rows = torch.repeat_interleave(counts, output_size=int(ends[-1]) if len(ends) else 0)  # row i, counts[i] times
    # position of each pair within its row's run of equal labels in the sorted order
    offsets = torch.arange(len(rows), device=rows.device) - (ends - counts).index_select(0, rows)
    return rows, order.index_select(0, start.index_select(0, rows) + offsets)


def candidates(
    sim: Tensor,
    anchor_labels: Tensor,
    ref_labels: Tensor,
    self_index: Tensor | None = None,
    duplicate_threshold: float = DUPLICATE_SIMILARITY,
    inplace: bool = False,
) -> tuple[PositivePairs, Tensor, tuple[Tensor, Tensor]]:
    """(usable positives, ``neg_sim``, same-class entries (flat indices, values)).

    ``neg_sim`` is ``sim`` with every same-class entry at -inf (``inplace``: written into
    ``sim`` itself; the caller restores it from the returned entries). A usable positive has the
    anchor's class, is not the anchor (``self_index``) and is not a near-duplicate (similarity
    >= ``duplicate_threshold``). Why this form: positives are sparse and come as a pair list;
    the negatives need the matrix written at the same-class entries only. Mining is then one
    reduction over [A, M] per strategy (the official code makes two masked copies and a
    handful of full-size masks).
    """
    rows, cols = same_class_pairs(anchor_labels, ref_labels)
    flat = rows * sim.shape[1] + cols  # entries of the row-major matrix
    values = sim.reshape(-1).index_select(0, flat)
    neg_sim = sim if inplace else sim.clone(memory_format=torch.contiguous_format)
    neg_sim.view(-1).index_fill_(0, flat, NOT_USABLE)
    usable = values < duplicate_threshold
    if self_index is not None:
        usable &= cols != self_index.index_select(0, rows)
    keep = usable.nonzero().squeeze(1)
    positives = PositivePairs(
        rows.index_select(0, keep), cols.index_select(0, keep), values.index_select(0, keep), len(anchor_labels)
    )
    return positives, neg_sim, (flat, values)


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

    ``self_index[i]`` is the column of anchor i itself (never its own positive);
    ``None`` means the anchors are not among the references.
    An anchor without a usable positive or negative yields no triplet.
    ``inplace=True`` saves a copy of the matrix: ``sim`` is used as scratch space and restored
    (bit for bit) before returning; only for a matrix nothing else reads meanwhile.
    """
    if pos not in POSITIVE_STRATEGIES:
        raise ValueError(f"mining.pos={pos!r} is unknown; choose one of {sorted(POSITIVE_STRATEGIES)}")
    if neg not in NEGATIVE_STRATEGIES:
        raise ValueError(f"mining.neg={neg!r} is unknown; choose one of {sorted(NEGATIVE_STRATEGIES)}")
    sim = sim.detach()
    inplace = inplace and sim.is_contiguous()  # the scratch writes index the row-major storage
    positives, neg_sim, same_class = candidates(sim, anchor_labels, ref_labels, self_index,
                                                duplicate_threshold, inplace)
    try:
        chosen = POSITIVE_STRATEGIES[pos](positives, generator)
        anchor, positive = positives.rows.index_select(0, chosen), positives.cols.index_select(0, chosen)
        s_ap = positives.values.index_select(0, chosen)
        negative, found = NEGATIVE_STRATEGIES[neg](neg_sim, anchor, s_ap, generator)
    finally:
        if inplace:
            flat, values = same_class
            sim.view(-1).index_copy_(0, flat, values)
    if not bool(found.all()):
        keep = found.nonzero().squeeze(1)
        anchor, positive, negative = (x.index_select(0, keep) for x in (anchor, positive, negative))
    return Triplets(anchor, positive, negative, num_anchors=sim.shape[0])
