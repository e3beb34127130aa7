"""One pass over the similarity matrix that everything in an evaluation reads: the ``Ranking``.

For every query it holds its nearest references (in ranking order), where its first positive
ranks, and its best positive and best negative similarity. Recall@K, MAP@R, R-Precision, the
test triplet diagram and the retrieval examples are all read off it, so an evaluation touches
the N x N similarities once, ``chunk_size`` query rows at a time (never the whole matrix).

Ranking order: similarity descending, ties to the lower reference index.

``rank(..., fast=False)`` is the definition, in a few lines per chunk: sort each row, read the
top k and the first relevant position off the sorted row, masked maxima for the best
positive/negative. It is the reference the tests hold the fast path against. ``fast=True`` (the
default) gives the same result (tested equal, ties included) with the block-maxima tricks of
``_chunks``: no full sort of a row, only its top few entries and one rank count. On CPU at SOP
scale (60k x 60k) the definition's per-row sort costs several times the matmul itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from hardneg.metrics import _chunks


@dataclass(frozen=True)
class Ranking:
    """What an evaluation needs of the ranking of the references for each query.

    similarities, indices: ``[Nq, k]`` the k nearest references, best first.
    first_positive: ``[Nq]`` how many references rank before the query's best positive (0: its
        nearest neighbour is a positive). Exact below ``rank_limit``; any value ``>= rank_limit``
        only means "at or after rank_limit". ``rank_limit`` larger than every reference count
        for queries without a positive.
    best_positive, best_negative: ``[Nq]`` the highest similarity to a same-class / other-class
        reference, ``-inf`` when there is none.
    num_positives: ``[Nq]`` R, the number of same-class references.
    """

    similarities: Tensor
    indices: Tensor
    first_positive: Tensor
    best_positive: Tensor
    best_negative: Tensor
    num_positives: Tensor
    rank_limit: int

    @property
    def k(self) -> int:
        return self.indices.shape[1]


def prepare_pair(query: Tensor, reference: Tensor | None) -> tuple[Tensor, Tensor]:
    """Detached, 2-D, on the query's device; float64 stays float64 (exact comparisons in tests
    and DDP checks), anything else becomes float32. ``reference`` defaults to ``query``."""
    if query.dim() != 2:
        raise ValueError(f"embeddings must be 2-D [N, D]; got shape {tuple(query.shape)}")
    dtype = torch.float64 if query.dtype == torch.float64 else torch.float32
    q = query.detach().to(dtype).contiguous()
    r = q if reference is None else reference.detach().to(device=q.device, dtype=dtype).contiguous()
    if r.dim() != 2 or r.shape[1] != q.shape[1]:
        raise ValueError(f"query {tuple(q.shape)} and reference {tuple(r.shape)} differ in dimension")
    return q, r


def _as_labels(labels: Tensor, n: int, device: torch.device, name: str) -> Tensor:
    labels = torch.as_tensor(labels)
    if labels.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match the embeddings; got {tuple(labels.shape)}")
    return labels.to(device=device, dtype=torch.long)


def count_positives(query_labels: Tensor, reference_labels: Tensor, same_set: bool) -> Tensor:
    """R per query: references of its class (itself excluded in leave-one-out)."""
    uniq, counts = torch.unique(reference_labels, return_counts=True)
    at = torch.searchsorted(uniq, query_labels).clamp(max=max(len(uniq) - 1, 0))
    found = (uniq[at] == query_labels) if len(uniq) else torch.zeros_like(query_labels, dtype=torch.bool)
    return torch.where(found, counts[at], 0) - int(same_set)


@torch.no_grad()
def rank(
    query: Tensor,
    query_labels: Tensor | None = None,
    reference: Tensor | None = None,
    reference_labels: Tensor | None = None,
    *,
    k: int | None = None,
    rank_limit: int | None = None,
    chunk_size: int = 4096,
    fast: bool = True,
) -> Ranking:
    """The ``Ranking`` of ``reference`` for each row of ``query`` (inner-product similarity).

    ``reference=None``: leave-one-out, each query ranks all *other* items of the query set.
    ``k``: neighbours kept; default: the largest R plus one, which is what MAP@R needs and always
    includes the best negative. It is clamped to the number of references.
    ``rank_limit``: ``first_positive`` is exact below it (default: exact everywhere). Labels may
    be omitted (plain kNN); then the positive/negative fields say "none".
    """
    same = reference is None
    if same != (reference_labels is None) and query_labels is not None:
        raise ValueError("give reference and reference_labels together (or neither, for leave-one-out)")
    q, r = prepare_pair(query, reference)
    nq, nr = q.shape[0], r.shape[0]
    n_ref = nr - int(same)  # references each query can retrieve
    if query_labels is None:
        ql = torch.full((nq,), -1, dtype=torch.long, device=q.device)
        rl = torch.full((nr,), -2, dtype=torch.long, device=q.device)  # nothing is a positive
    else:
        ql = _as_labels(query_labels, nq, q.device, "query_labels")
        rl = ql if same else _as_labels(reference_labels, nr, q.device, "reference_labels")
    num_pos = count_positives(ql, rl, same)
    if k is None:
        k = int(num_pos.max()) + 1 if nq else 1
    if k < 0:
        raise ValueError(f"k must be >= 0; got {k}")
    k = max(0, min(k, n_ref))
    never = max(n_ref, 0) + 1
    limit = never if rank_limit is None else min(max(1, rank_limit), never)
    out = {
        "similarities": q.new_empty(nq, k),
        "indices": torch.empty(nq, k, dtype=torch.long, device=q.device),
        "first_positive": torch.full((nq,), never, dtype=torch.long, device=q.device),
        "best_positive": q.new_full((nq,), -math.inf),
        "best_negative": q.new_full((nq,), -math.inf),
    }
    chunk_fn = _rank_chunk_fast if fast else _rank_chunk_reference
    chunks = _chunks.iter_similarity_chunks(q, r, chunk_size, same) if fast else _plain_chunks(q, r, chunk_size, same)
    positives = _PositiveColumns(ql, rl, same) if fast else None
    for start, stop, s in chunks:
        part = chunk_fn(s, ql[start:stop], rl, k, limit, nr, start, same, num_pos[start:stop], positives)
        for key, value in zip(out, part):
            out[key][start:stop] = value
    no_positive = num_pos <= 0
    out["first_positive"][no_positive] = never
    return Ranking(**out, num_positives=num_pos.clamp(min=0), rank_limit=limit)


# -- the definition ----------------------------------------------------------------------------
def _plain_chunks(q: Tensor, r: Tensor, chunk_size: int, exclude_self: bool):
    for start in range(0, len(q), max(1, chunk_size)):
        s = q[start:start + max(1, chunk_size)] @ r.T
        if exclude_self:  # an item never retrieves itself
            rows = torch.arange(len(s), device=s.device)
            s[rows, rows + start] = -math.inf
        yield start, start + len(s), s


def _rank_chunk_reference(s, ql, rl, k, limit, nr, start, same, num_pos, positives):
    """Sort every row; read the top k and the first positive off the sorted row."""
    same_class = ql[:, None] == rl[None, :]
    if same:  # the query itself is neither its own positive nor its own negative
        rows = torch.arange(len(s), device=s.device)
        same_class[rows, rows + start] = False
        is_self = torch.zeros_like(same_class)
        is_self[rows, rows + start] = True
    else:
        is_self = torch.zeros_like(same_class)
    sims, order = s.sort(dim=1, descending=True, stable=True)  # stable: ties keep the lower index first
    relevant = same_class.gather(1, order)
    first = torch.where(relevant.any(1), relevant.to(torch.uint8).argmax(1), limit).clamp(max=limit)
    best_pos = s.masked_fill(~same_class, -math.inf).amax(1)
    best_neg = s.masked_fill(same_class | is_self, -math.inf).amax(1)
    return sims[:, :k], order[:, :k], first, best_pos, best_neg


# -- the same, fast ----------------------------------------------------------------------------
class _PositiveColumns:
    """For every query, the reference columns of its class (sorted by index)."""

    def __init__(self, query_labels: Tensor, reference_labels: Tensor, same_set: bool):
        self.order = torch.argsort(reference_labels, stable=True)
        uniq, counts = torch.unique_consecutive(reference_labels[self.order], return_counts=True)
        starts = counts.cumsum(0) - counts
        pos = torch.searchsorted(uniq, query_labels).clamp(max=max(len(uniq) - 1, 0))
        found = uniq[pos] == query_labels if len(uniq) else torch.zeros_like(query_labels, dtype=torch.bool)
        self.count = torch.where(found, counts[pos], 0)
        self.start = starts[pos]
        self.same_set = same_set

    def columns(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        count = self.count[start:stop]
        width = int(count.max()) if len(count) else 0
        j = torch.arange(width, device=count.device)
        valid = j < count[:, None]
        at = (self.start[start:stop, None] + j).clamp(max=max(len(self.order) - 1, 0))
        cols = self.order[at] if len(self.order) else at
        if self.same_set:
            valid &= cols != torch.arange(start, stop, device=cols.device)[:, None]
        return cols, valid


def _rank_chunk_fast(s, ql, rl, k, limit, nr, start, same, num_pos, positives):
    """Top k by block maxima; the best positive's rank counted, not sorted for.

    ``s`` has padding columns (and the query's own column) at ``-inf``. The best positive is
    the maximum over the query's class columns (lowest column among equals); the items ranked
    before it are counted against per-block maxima. The best negative is the first non-positive
    of the top list when that list is longer than R (the default k), else a masked maximum.
    """
    n = len(s)
    scratch = _chunks.Scratch()
    count_limit = min(limit, nr)
    bmax = _chunks.block_max(s, _chunks.rank_block(s.shape[1], max(k, count_limit)), scratch)
    first = torch.full((n,), limit, dtype=torch.long, device=s.device)
    best_pos = s.new_full((n,), -math.inf)
    cols, valid = positives.columns(start, start + n)
    if cols.shape[1] > 0:
        pv = s.gather(1, cols).masked_fill(~valid, -math.inf)
        best_pos = pv.amax(1)
        has = num_pos > 0
        best_col = torch.where(valid & (pv == best_pos[:, None]), cols, nr).amin(1)
        counted = _chunks.count_ranked_before(s, bmax, torch.where(has, best_pos, math.inf), best_col, count_limit,
                                              scratch)
        first = torch.where(has, counted.clamp(max=limit), limit)
    sims, idx = _chunks.topk_sorted(s, k, bmax, scratch)
    negative = rl[idx] != ql[:, None]
    found = negative.any(1)
    best_neg = s.new_full((n,), -math.inf)
    if k:
        at = negative.to(torch.uint8).argmax(1, keepdim=True)  # the first negative in ranking order
        best_neg = torch.where(found, sims.gather(1, at).squeeze(1), best_neg)
    # A top list holding only positives (k clamped below R + 1) says nothing of the negatives
    # beyond it: those rows take the masked maximum, if they have a negative at all.
    rows = (~found & (num_pos.clamp(min=0) < nr - int(same))).nonzero().flatten()
    if len(rows):
        row_same = ql[rows, None] == rl[None, :]
        best_neg[rows] = s[rows, :nr].masked_fill(row_same, -math.inf).amax(1)
    return sims, idx, first, best_pos, best_neg
