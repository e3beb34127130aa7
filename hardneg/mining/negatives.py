"""Negative selection for given (anchor, positive) pairs.

Each strategy returns (negative columns [T], found [T]) for the T anchor/positive pairs.
Input ``neg_sim`` [A, M] is the similarity matrix with same-class entries set to -inf;
``s_ap`` [T] is the similarity of each pair's chosen positive.
"""
from __future__ import annotations

import torch
from torch import Tensor

from hardneg.mining.reduce import row_max, row_min

NOT_USABLE = float("-inf")  # similarity given to references that are not negatives


# Row chunks of about this many entries (4 MiB of float32) bound the masked temporary copies.
CHUNK_ELEMENTS = 1 << 20


def _row_chunks(neg_sim: Tensor, anchor: Tensor):
    """Yield (start, stop, neg_sim[anchor[start:stop]]) over the T triplets in chunks; a view,
    not a copy, when the anchors are exactly all rows in order (easy positives in a batch where
    every sample has a class mate)."""
    step = max(1, CHUNK_ELEMENTS // max(1, neg_sim.shape[1]))
    all_rows = len(anchor) == len(neg_sim) and bool((anchor == torch.arange(len(anchor), device=anchor.device)).all())
    for start in range(0, len(anchor), step):
        stop = min(start + step, len(anchor))
        yield start, stop, neg_sim[start:stop] if all_rows else neg_sim.index_select(0, anchor[start:stop])


def _per_triplet(neg_sim, anchor, best_of_chunk) -> tuple[Tensor, Tensor]:
    """(values, cols) [T] of ``best_of_chunk(start, stop, rows)``, chunk by chunk."""
    values = neg_sim.new_empty(len(anchor))
    cols = anchor.new_empty(len(anchor))
    for start, stop, rows in _row_chunks(neg_sim, anchor):
        values[start:stop], cols[start:stop] = best_of_chunk(start, stop, rows)
    return values, cols


def hardest_negative(neg_sim, anchor, s_ap, generator=None) -> tuple[Tensor, Tensor]:
    """The most similar negative of each anchor (per anchor once, then gathered)."""
    values, cols = row_max(neg_sim)
    return cols.index_select(0, anchor), (values > NOT_USABLE).index_select(0, anchor)


def semihard_negative(neg_sim, anchor, s_ap, generator=None) -> tuple[Tensor, Tensor]:
    """The most similar negative that is still less similar than the chosen positive.

    The paper's definition: negatives with S_an > S_ap are not allowed; an anchor whose
    every negative is harder than its positive gives no triplet. (The official code also
    allows S_an == S_ap exactly; "less similar" here is strict, a measure-zero difference.)
    """
    values, cols = _per_triplet(
        neg_sim, anchor,
        lambda start, stop, rows: row_max(torch.where(rows < s_ap[start:stop, None], rows, NOT_USABLE)),
    )
    return cols, values > NOT_USABLE


def easy_negative(neg_sim, anchor, s_ap, generator=None) -> tuple[Tensor, Tensor]:
    """The least similar negative (per anchor once, then gathered)."""
    every_row = torch.arange(len(neg_sim), device=anchor.device)
    values, cols = _per_triplet(
        neg_sim, every_row, lambda start, stop, rows: row_min(torch.where(rows > NOT_USABLE, rows, float("inf")))
    )
    return cols.index_select(0, anchor), (values < float("inf")).index_select(0, anchor)


def random_negative(neg_sim, anchor, s_ap, generator=None) -> tuple[Tensor, Tensor]:
    """A uniformly random negative, drawn independently for every triplet (uniform scores,
    non-negatives at -1, then the row's best)."""

    def draw(start, stop, rows):
        scores = torch.rand(rows.shape, generator=generator, device="cpu").to(rows.device)
        return row_max(scores.masked_fill_(rows == NOT_USABLE, -1.0))

    values, cols = _per_triplet(neg_sim, anchor, draw)
    return cols, values >= 0


NEGATIVE_STRATEGIES = {
    "hardest": hardest_negative,
    "semihard": semihard_negative,
    "easy": easy_negative,
    "random": random_negative,
}
