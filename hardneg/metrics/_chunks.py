"""Exact nearest-neighbour building blocks on one chunk of the similarity matrix.

The full N x N similarity matrix is never built: queries are processed ``chunk_size`` rows at a
time against the whole reference set. Everything here is exact; the speed comes from two ideas.

* Block maxima. Columns are grouped in blocks (``COL_BLOCK`` or a smaller power of two, see
  ``rank_block``); one cheap pass computes each block's maximum. The top-k items of a row lie in
  the k blocks with the largest maxima, and an item's rank is at least the number of blocks
  whose maximum beats it, so top-k and rank queries look at a few blocks, not the whole row.
  A block is *strided*: with ``nb = width / b`` blocks, block j holds columns j, j + nb,
  j + 2 nb, ... Its maxima are an elementwise max of b contiguous slices, which vectorises
  (about 1.7x faster than maxima of contiguous runs on AVX-512): roughly a tenth of the cost of
  the D = 512 matmul that produced the chunk.
* Canonical matmul shapes. BLAS libraries pick different kernels (and summation orders) for
  different matrix shapes, so ``q @ R.T`` for one row can differ in the last bit with the chunk
  it is computed in. Every query row is therefore computed in a block of exactly ``ROW_BLOCK``
  rows at a fixed position (zero-padded, copied into one reused buffer): similarities, hence
  rankings and ties, are bitwise identical for every ``chunk_size``.

Large temporaries are reused (``Scratch``): a fresh tensor above glibc's mmap threshold (32 MB)
is paid in page faults on first touch, and on small VMs that cost more than the arithmetic.

Ranking order everywhere: similarity descending, then reference index ascending (ties are broken
towards the lower index).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

ROW_BLOCK = 512  # rows per matmul; the effective chunk is a multiple of it (at least one block)
COL_BLOCK = 32  # largest columns per block maximum; rows are padded to a multiple of it
MIN_BLOCK = 8  # smallest block rank_block picks
SLAB = 2**22  # entries (16 MB of float32) per temporary of the rank counting, processed in slabs


class Scratch:
    """Named flat buffers, grown on demand and reused across chunks."""

    def __init__(self):
        self._bufs: dict[str, Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
        n = math.prod(shape)
        buf = self._bufs.get(name)
        if buf is None or buf.numel() < n or buf.dtype != like.dtype or buf.device != like.device:
            buf = self._bufs[name] = torch.empty(n, dtype=like.dtype, device=like.device)
        return buf[:n].view(shape)


def iter_similarity_chunks(
    query: Tensor, reference: Tensor, chunk_size: int, exclude_self: bool
) -> Iterator[tuple[int, int, Tensor]]:
    """Yield ``(start, stop, S)`` with ``S = query[start:stop] @ reference.T``.

    ``S`` has ``ceil(N_ref / COL_BLOCK) * COL_BLOCK`` columns; the padding columns, and the query's
    own column when ``exclude_self``, hold ``-inf``. ``S`` is a view of a reused buffer: consume it
    before the next iteration.
    """
    nq, dim = query.shape
    nr = reference.shape[0]
    width = max(1, math.ceil(nr / COL_BLOCK)) * COL_BLOCK
    ref_t = reference.t()
    rows = max(1, chunk_size // ROW_BLOCK) * ROW_BLOCK
    rows = min(rows, max(1, math.ceil(nq / ROW_BLOCK)) * ROW_BLOCK)
    buf = query.new_zeros(ROW_BLOCK, dim)
    sims = query.new_empty(rows, width)
    sims[:, nr:] = -math.inf  # padding columns: never written by the matmul below
    for start in range(0, nq, rows):
        stop = min(start + rows, nq)
        for j, a in enumerate(range(start, stop, ROW_BLOCK)):
            b = min(a + ROW_BLOCK, stop)
            if b - a < ROW_BLOCK:
                buf.zero_()
            buf[: b - a].copy_(query[a:b])
            # Written in place into the first nr columns (BLAS takes the row stride as is).
            torch.mm(buf, ref_t, out=sims[j * ROW_BLOCK : (j + 1) * ROW_BLOCK, :nr])
        s = sims[: stop - start]
        if exclude_self:
            r = torch.arange(stop - start, device=s.device)
            s[r, r + start] = -math.inf
        yield start, stop, s


def rank_block(width: int, limit: int) -> int:
    """Block size for rank bounds up to ``limit``: a bound counts blocks, so it can only prove
    "ranked after ``limit``" when there are well over ``limit`` blocks. The largest power of two
    <= COL_BLOCK giving ``2 * limit`` blocks, but at least MIN_BLOCK (smaller blocks cost more)."""
    block = COL_BLOCK
    while block > min(MIN_BLOCK, COL_BLOCK) and width // block < 2 * limit:
        block //= 2
    return block


def block_max(s: Tensor, block: int | None = None, scratch: Scratch | None = None) -> Tensor:
    """Maximum of each of the ``nb = width // block`` strided blocks: ``[n, nb]``."""
    n, width = s.shape
    block = block or COL_BLOCK
    out = None if scratch is None else scratch.get("bmax", (n, width // block), s)
    return torch.amax(s.view(n, block, width // block), dim=1, out=out)


def _block_columns(blocks: Tensor, block: int, nb: int) -> Tensor:
    """Columns of the given blocks ``[n, kb]`` -> ``[n, block * kb]``; ascending when ``blocks`` are."""
    offs = torch.arange(block, device=blocks.device) * nb
    return (blocks[:, None, :] + offs[:, None]).reshape(blocks.shape[0], -1)


def _sorted_prefix(vals: Tensor, cols: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k best candidates in ranking order; ``cols`` must ascend along each row.

    ``topk`` finds the k-th value; where more candidates reach it (a tie at the boundary) a stable
    sort decides, since it keeps equal values in ascending column order.
    """
    top, at = vals.topk(k, dim=1)
    tied = ((vals >= top[:, -1:]).sum(1) > k).nonzero().flatten()
    if len(tied):
        v, order = vals[tied].sort(dim=1, descending=True, stable=True)
        top[tied], at[tied] = v[:, :k], order[:, :k]
    top_cols = cols.gather(1, at)
    # Within the top k, order equal values by column: sort by column, then stably by value.
    by_col = top_cols.argsort(dim=1)
    top, top_cols = top.gather(1, by_col), top_cols.gather(1, by_col)
    top, order = top.sort(dim=1, descending=True, stable=True)
    return top, top_cols.gather(1, order)


def topk_sorted(s: Tensor, k: int, bmax: Tensor | None = None, scratch: Scratch | None = None) -> tuple[Tensor, Tensor]:
    """Exact top-k of every row of ``s`` in ranking order: ``(values, columns)``, each ``[n, k]``.

    ``k`` must not exceed the number of finite entries of any row. ``bmax`` is ``block_max(s, b)``
    (any block size b) when the caller already has it.
    """
    n, width = s.shape
    if k <= 0:
        return s.new_empty(n, 0), torch.empty(n, 0, dtype=torch.long, device=s.device)
    block = COL_BLOCK if bmax is None else width // bmax.shape[1]
    if k * block * 4 <= width:  # pruning by block maxima pays off
        bmax = block_max(s, block) if bmax is None else bmax
        # The k-th largest block maximum is <= the k-th largest value, so every top-k item lies
        # in a block whose maximum is >= it. Ties can make that more than k blocks.
        kth = bmax.topk(k, dim=1).values[:, -1:]
        kb = int(_count_above(bmax, kth, False, scratch).max())
        if kb * block * 2 <= width:
            blocks = bmax.topk(kb, dim=1).indices.sort(dim=1).values
            cols = _block_columns(blocks, block, bmax.shape[1])
            return _sorted_prefix(s.gather(1, cols), cols, k)
    return _full_topk(s, k)


def _full_topk(s: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-k over whole rows; ties at the k-th value are resolved towards lower columns."""
    n, width = s.shape
    kth = s.topk(k, dim=1, sorted=False).values.amin(1, keepdim=True)
    ge = s >= kth
    count = ge.sum(1)
    tied = (count > k).nonzero().flatten()
    if len(tied):  # more candidates than k: keep all > kth, then the lowest columns == kth
        st, kt = s[tied], kth[tied]
        gt, eq = st > kt, st == kt
        need = k - gt.sum(1, keepdim=True)
        ge[tied] = gt | (eq & (eq.cumsum(1) <= need))
    cols = ge.nonzero()[:, 1].view(n, k)  # nonzero is row-major: columns ascend within a row
    return _sorted_prefix(s.gather(1, cols), cols, k)


def _count_above(vals: Tensor, value: Tensor, strict: bool = True, scratch: Scratch | None = None) -> Tensor:
    """Per row, entries ``> value`` (``>=`` when not strict), as int64.

    The comparison is written into a float buffer and summed as floats (exact below 2**24
    entries per row): on CPU about four times faster than a bool result and its sum. Rows go
    in slabs of at most SLAB entries, so the buffer stays small.
    """
    n, width = vals.shape
    step = max(1, SLAB // max(1, width))
    buf = (scratch or Scratch()).get("cmp", (min(n, step), width), vals)
    out = torch.empty(n, dtype=torch.long, device=vals.device)
    op = torch.gt if strict else torch.ge
    for a in range(0, n, step):
        b = min(a + step, n)
        out[a:b] = op(vals[a:b], value[a:b], out=buf[: b - a]).sum(1)
    return out


def count_ranked_before(
    s: Tensor, bmax: Tensor, value: Tensor, col: Tensor, limit: int, scratch: Scratch | None = None
) -> Tensor:
    """Per row, how many columns rank before the item ``(value, col)``; exact when below ``limit``.

    Rows whose count is ``>= limit`` get some number ``>= limit`` (enough to decide Recall@K for
    every K <= limit). ``value`` must be finite, or ``+inf`` for rows to skip (count 0).
    """
    n, width = s.shape
    nb = bmax.shape[1]
    block = width // nb
    scratch = scratch or Scratch()
    # Each block whose maximum is strictly larger holds at least one item ranked before.
    out = _count_above(bmax, value[:, None], True, scratch)
    need = (out < limit).nonzero().flatten()
    if len(need) == 0:
        return out
    val, c = value[need, None], col[need, None]
    bm = bmax[need]
    ncand = _count_above(bm, val, False, scratch)  # blocks that may hold items ranked before
    # Rows with few candidate blocks gather just those; the others scan their whole row. Rows go
    # in slabs so that the copies stay a fraction of the chunk.
    few = ncand <= max(1, nb // 16)
    for group in (few, ~few):
        sel = group.nonzero().flatten()
        kb = int(ncand[sel].max()) if group is few and len(sel) else nb
        step = max(1, SLAB // (block * max(1, kb)))  # rows per slab
        for a in range(0, len(sel), step):
            part = sel[a : a + step]
            rows = need[part]
            if group is few:
                cols = _block_columns(bm[part].topk(kb, dim=1).indices, block, nb)
                vals = s[rows[:, None], cols]
            else:
                cols = None
                # One gather into a reused buffer. (index_select copies row by row, one OpenMP
                # region each, which stalls for milliseconds per row when cores are oversubscribed.)
                vals = scratch.get("rows", (len(rows), width), s)
                torch.gather(s, 0, rows[:, None].expand(-1, width), out=vals)
            out[rows] = _count_before(vals, val[part], c[part], cols, scratch)
    return out


def _count_before(vals: Tensor, value: Tensor, col: Tensor, cols: Tensor | None, scratch: Scratch) -> Tensor:
    """Per row, entries ranked before ``(value, col)``: larger, or equal with a lower column.
    ``cols`` are the columns of ``vals`` (``None``: ``vals`` are whole rows)."""
    out = _count_above(vals, value, True, scratch)
    tied = (_count_above(vals, value, False, scratch) - out > 1).nonzero().flatten()  # besides the item
    if len(tied):
        cols = torch.arange(vals.shape[1], device=vals.device) if cols is None else cols[tied]
        out[tied] += ((vals[tied] == value[tied]) & (cols < col[tied])).sum(1)
    return out
