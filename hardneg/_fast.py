"""The speed tricks of mining and the triplet loss, in one place, behind one interface.

Nothing here is needed to understand or extend hardneg: every strategy in ``hardneg/mining``
is written as its definition (a masked max/min over the similarity matrix), and that readable
form is what the tests hold this module against (same triplets, same loss, same gradients).
This module only makes the built-in strategies cheaper where it was measured to pay off
(CPU, batches of a few hundred and more; see ``experiments/bench/results/losses.md``):

    supports(pos, neg, sim)   -> bool: is there a fast path for this strategy pair and matrix?
    mine(sim, ...)            -> (anchor, positive, negative) index tensors, as the reference
    pick_similarities(...)    -> sim[rows, cols], differentiable with an O(T * D) backward

The tricks, and why:
- positives as a sparse pair list built from sorted labels, never an [A, M] mask (a batch holds
  a few images per class), so a positive strategy costs O(pairs);
- same-class entries written to -inf in the matrix itself (``inplace``: the triplet path's
  matrix is private; restored bit for bit before returning) instead of masked copies;
- row chunks bounding the masked temporary copies (semihard) to a few MiB;
- a block-wise row argmax: torch's max-with-index does not vectorise on CPU, ``amax`` does;
- a sparse backward for the 2T picked entries instead of a dense [A, M] gradient and two
  more A x M x D matmuls.
Small matrices skip all of this: there, per-op overhead dominates and the reference's few
dense ops are the fastest form (measured at the paper's 128 x 64 CUB/Cars batches).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

NOT_USABLE = float("-inf")

# Below this many matrix entries the dense reference is faster than any trick (per-op overhead).
MIN_ENTRIES = 256 * 256
# Row chunks of about this many entries (4 MiB of float32) bound the masked temporary copies.
CHUNK_ELEMENTS = 1 << 20
# Columns per block of the row argmax: long enough for amax to vectorise, short for the gather.
BLOCK = 32


def large(num_entries: int) -> bool:
    """Whether the tricks pay off for a matrix this size (else the dense reference is faster)."""
    return num_entries >= MIN_ENTRIES


def supports(pos: str, neg: str, sim: Tensor) -> bool:
    """A fast path exists for this (positive, negative) strategy pair and this matrix.

    Random strategies are left to the reference (their draws must match it exactly)."""
    return pos in _POSITIVE and neg in _NEGATIVE and large(sim.numel())


# ============================================================================ mining
def mine(
    sim: Tensor,
    anchor_labels: Tensor,
    ref_labels: Tensor,
    self_index: Tensor | None,
    pos: str,
    neg: str,
    duplicate_threshold: float,
    inplace: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """(anchor, positive, negative) exactly as ``hardneg.mining.triplets.reference_triplets``.

    ``inplace``: ``sim`` may serve as scratch space (restored bit for bit before returning)."""
    sim = sim.detach()
    inplace = inplace and sim.is_contiguous()  # the scratch writes index the row-major storage
    rows, cols = same_class_pairs(anchor_labels, ref_labels)
    flat = rows * sim.shape[1] + cols  # entries of the row-major matrix
    values = sim.reshape(-1).index_select(0, flat)
    neg_sim = sim if inplace else sim.clone(memory_format=torch.contiguous_format)
    neg_sim.view(-1).index_fill_(0, flat, NOT_USABLE)
    try:
        usable = values < duplicate_threshold
        if self_index is not None:
            usable &= cols != self_index.index_select(0, rows)
        keep = usable.nonzero().squeeze(1)
        p_rows, p_cols, p_values = rows.index_select(0, keep), cols.index_select(0, keep), values.index_select(0, keep)
        chosen = _POSITIVE[pos](p_rows, p_values, len(anchor_labels))
        anchor, positive = p_rows.index_select(0, chosen), p_cols.index_select(0, chosen)
        negative, found = _NEGATIVE[neg](neg_sim, anchor, p_values.index_select(0, chosen))
    finally:
        if inplace:
            sim.view(-1).index_copy_(0, flat, values)
    if not bool(found.all()):
        keep = found.nonzero().squeeze(1)
        anchor, positive, negative = (x.index_select(0, keep) for x in (anchor, positive, negative))
    return anchor, positive, negative


def same_class_pairs(anchor_labels: Tensor, ref_labels: Tensor) -> tuple[Tensor, Tensor]:
    """All (row, col) with equal labels, rows ascending and columns ascending within a row
    (the order of ``mask.nonzero()``), from sorted labels in O(M log M + pairs)."""
    sorted_labels, order = torch.sort(ref_labels, stable=True)
    anchor_labels = anchor_labels.to(sorted_labels.dtype)
    start = torch.searchsorted(sorted_labels, anchor_labels, side="left")
    counts = torch.searchsorted(sorted_labels, anchor_labels, side="right") - start
    ends = torch.cumsum(counts, 0)
    rows = torch.repeat_interleave(counts, output_size=int(ends[-1]) if len(ends) else 0)  # row i, counts[i] times
    # position of each pair within its row's run of equal labels in the sorted order
    offsets = torch.arange(len(rows), device=rows.device) - (ends - counts).index_select(0, rows)
    return rows, order.index_select(0, start.index_select(0, rows) + offsets)


# ----------------------------------------------------------------- positives over a pair list
def _best_per_row(rows: Tensor, score: Tensor, num_rows: int) -> Tensor:
    """For every row that has pairs: the pair with the highest ``score``, the lowest column on
    ties (as ``argmax`` over the dense row). Returns pair indices."""
    num_pairs = len(rows)
    best = score.new_full((num_rows,), float("-inf")).scatter_reduce(0, rows, score, "amax")
    position = torch.arange(num_pairs, device=rows.device)
    position = torch.where(score == best.index_select(0, rows), position, num_pairs)  # losers never the min
    first = position.new_full((num_rows,), num_pairs).scatter_reduce(0, rows, position, "amin")
    return first.masked_select(first < num_pairs)


_POSITIVE = {
    "easy": lambda rows, values, n: _best_per_row(rows, values, n),
    "hard": lambda rows, values, n: _best_per_row(rows, -values, n),
    "all": lambda rows, values, n: torch.arange(len(rows), device=rows.device),
}


# ----------------------------------------------------------------- negatives over neg_sim
def _row_chunks(neg_sim: Tensor, anchor: Tensor):
    """Yield (start, stop, neg_sim[anchor[start:stop]]) in chunks; a view, not a copy, when the
    anchors are exactly all rows in order (easy positives, every sample with a class mate)."""
    step = max(1, CHUNK_ELEMENTS // max(1, neg_sim.shape[1]))
    all_rows = len(anchor) == len(neg_sim) and bool((anchor == torch.arange(len(anchor), device=anchor.device)).all())
    for start in range(0, len(anchor), step):
        stop = min(start + step, len(anchor))
        yield start, stop, neg_sim[start:stop] if all_rows else neg_sim.index_select(0, anchor[start:stop])


def _hardest(neg_sim, anchor, s_ap):
    values, cols = row_max(neg_sim)  # per anchor once, then gathered
    return cols.index_select(0, anchor), (values > NOT_USABLE).index_select(0, anchor)


def _semihard(neg_sim, anchor, s_ap):
    values = neg_sim.new_empty(len(anchor))
    cols = anchor.new_empty(len(anchor))
    for start, stop, rows in _row_chunks(neg_sim, anchor):
        masked = torch.where(rows < s_ap[start:stop, None], rows, NOT_USABLE)
        values[start:stop], cols[start:stop] = row_max(masked)
    return cols, values > NOT_USABLE


def _easy(neg_sim, anchor, s_ap):
    values = neg_sim.new_empty(len(neg_sim))
    cols = anchor.new_empty(len(neg_sim))
    every_row = torch.arange(len(neg_sim), device=anchor.device)
    for start, stop, rows in _row_chunks(neg_sim, every_row):
        values[start:stop], cols[start:stop] = row_min(torch.where(rows > NOT_USABLE, rows, float("inf")))
    return cols.index_select(0, anchor), (values < float("inf")).index_select(0, anchor)


_NEGATIVE = {"hardest": _hardest, "semihard": _semihard, "easy": _easy}


# ----------------------------------------------------------------- block-wise row argmax
def row_max(x: Tensor, block: int = BLOCK) -> tuple[Tensor, Tensor]:
    """``x.max(dim=1)`` (first index on ties), faster on CPU.

    On CPU torch's max-with-index kernel does not vectorise while ``amax`` does (about 10x on
    a [512, 512] float32 matrix). So: ``amax`` over short blocks of each row, max-with-index
    over the few block maxima (the first block holding the row's max), and max-with-index
    inside that one block only. The first index of the max lies in the first block containing
    it, so ties resolve exactly as in ``x.max(dim=1)``."""
    return _row_best(x, block, largest=True)


def row_min(x: Tensor, block: int = BLOCK) -> tuple[Tensor, Tensor]:
    """``x.min(dim=1)`` (first index on ties), faster on CPU."""
    return _row_best(x, block, largest=False)


def _row_best(x: Tensor, block: int, largest: bool) -> tuple[Tensor, Tensor]:
    best, best_of = (torch.max, torch.amax) if largest else (torch.min, torch.amin)
    rows, cols = x.shape
    num_blocks = cols // block
    if x.device.type != "cpu" or num_blocks < 2:
        return best(x, dim=1)
    main = x[:, : num_blocks * block].unflatten(1, (num_blocks, block))  # a view, no copy
    values, best_block = best(best_of(main, dim=2), dim=1)  # the first block holding the best
    inside = main.gather(1, best_block.view(rows, 1, 1).expand(rows, 1, block)).squeeze(1)  # [A, block]
    index = best_block * block + best(inside, dim=1).indices
    if num_blocks * block < cols:  # the columns after the last whole block
        rest_values, rest_index = best(x[:, num_blocks * block :], dim=1)
        later = rest_values > values if largest else rest_values < values  # strict: ties keep the earlier
        values = torch.where(later, rest_values, values)
        index = torch.where(later, rest_index + num_blocks * block, index)
    return values, index


# ============================================================================ sparse backward
class _PickSimilarities(torch.autograd.Function):
    """``sim[rows, cols]`` out of a matrix computed without gradient, differentiable as
    ``<anchors[rows], refs[cols]>``.

    A triplet loss touches only 2T of the A x M entries. Autograd through the dense matrix
    would build a dense [A, M] gradient and pay two more A x M x D matmuls in backward; here
    backward costs O(T * D). The forward values are the matrix's own entries (not recomputed
    dot products), so mining decisions and loss see the same numbers.
    """

    @staticmethod
    def forward(ctx, sim: Tensor, anchors: Tensor, refs: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
        ctx.save_for_backward(anchors, refs, rows, cols)
        ctx.same_tensor = anchors is refs  # self-mining: one gradient buffer for both roles
        return sim[rows, cols]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        anchors, refs, rows, cols = ctx.saved_tensors
        # d<a_r, b_c>/da_r = b_c and /db_c = a_r: the gradients are G @ refs and G^T @ anchors
        # for the sparse [A, M] matrix G that holds the 2T incoming gradients.
        if ctx.same_tensor:  # self-mining: (G + G^T) @ E, one buffer for both roles
            both = _sparse_rows_times(torch.cat([rows, cols]), torch.cat([cols, rows]), torch.cat([grad, grad]),
                                      anchors, len(anchors))
            return None, both, None, None, None  # autograd routes it to the one tensor
        grad_anchors = grad_refs = None
        if ctx.needs_input_grad[1]:
            grad_anchors = _sparse_rows_times(rows, cols, grad, refs, len(anchors))
        if ctx.needs_input_grad[2]:
            grad_refs = _sparse_rows_times(cols, rows, grad, anchors, len(refs))
        return None, grad_anchors, grad_refs, None, None


def _sparse_rows_times(rows: Tensor, cols: Tensor, values: Tensor, dense: Tensor, num_rows: int) -> Tensor:
    """``S @ dense`` for the [num_rows, len(dense)] sparse S with ``S[rows, cols] += values``.

    A weighted ``embedding_bag`` (one bag per output row): on CPU ~1.3x faster than
    ``torch.sparse.mm`` and ~2.5x faster than gather + multiply + ``index_add_``."""
    order = torch.argsort(rows, stable=True)
    counts = torch.bincount(rows, minlength=num_rows)
    offsets = torch.cumsum(counts, 0) - counts
    dtype = dense.dtype if dense.dtype in (torch.float32, torch.float64) else torch.float32
    out = F.embedding_bag(cols[order], dense.to(dtype), offsets, mode="sum", per_sample_weights=values[order].to(dtype))
    return out.to(dense.dtype)


def pick_similarities(sim: Tensor, anchors: Tensor, refs: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """Entries ``sim[rows, cols]`` of ``sim = anchors @ refs.T`` (computed without gradient),
    with the gradient of the dot products, in O(T * D)."""
    return _PickSimilarities.apply(sim.detach(), anchors, refs, rows, cols)
