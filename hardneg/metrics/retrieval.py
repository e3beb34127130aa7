"""Recall@K, MAP@R, R-Precision and NMI for zero-shot retrieval, exact and in bounded memory.

Definitions (ranking: cosine similarity descending, ties to the lower reference index):
* Recall@K: share of queries with at least one same-class reference among their K nearest.
  Every query counts, including one whose class has no other reference (always a miss).
* MAP@R and R-Precision (Musgrave et al., "A Metric Learning Reality Check", ECCV 2020), with
  R = number of same-class references (the query itself excluded in leave-one-out):
  R-Precision = hits in the top R / R; AP@R = (1/R) sum_{i<=R} precision@i * [item i relevant].
  Queries with R = 0 (a class of one item in leave-one-out, or a query class absent from the
  gallery) are undefined for these two and are left out of their averages (as in
  pytorch-metric-learning); if no query has R > 0 they are NaN.
* NMI: k-means on the query embeddings with as many clusters as query classes.

How it stays fast (torch backend): Recall@K needs only the rank of each query's best positive,
counted against per-block maxima of the similarity row (see ``_chunks``), not a top-1000 list;
MAP@R needs only the top R (a few to a few dozen). The faiss backend instead searches the
max(max(ks), max R) nearest neighbours and reads the metrics off that list.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

from hardneg.metrics._chunks import (
    Scratch,
    block_max,
    count_ranked_before,
    iter_similarity_chunks,
    rank_block,
    topk_sorted,
)
from hardneg.metrics.clustering import nmi_kmeans
from hardneg.metrics.knn import check_backend, prepare_pair


def _labels(labels: Tensor, n: int, device: torch.device, name: str) -> Tensor:
    labels = torch.as_tensor(labels)
    if labels.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match the embeddings; got {tuple(labels.shape)}")
    return labels.to(device=device, dtype=torch.long)


def _check_ks(ks: Iterable[int]) -> list[int]:
    ks = sorted({int(k) for k in ks})
    if ks and ks[0] < 1:
        raise ValueError(f"every K in ks must be >= 1; got {ks}")
    return ks


class _Positives:
    """For every query, the reference columns of its class (sorted by index) and R."""

    def __init__(self, query_labels: Tensor, reference_labels: Tensor, same_set: bool):
        self.order = torch.argsort(reference_labels, stable=True)
        uniq, counts = torch.unique_consecutive(reference_labels[self.order], return_counts=True)
        starts = counts.cumsum(0) - counts
        pos = torch.searchsorted(uniq, query_labels).clamp(max=len(uniq) - 1)
        found = uniq[pos] == query_labels
        self.count = torch.where(found, counts[pos], 0)
        self.start = starts[pos]
        self.same_set = same_set
        self.r = self.count - int(same_set)  # in leave-one-out the query's own class holds itself

    def columns(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        count = self.count[start:stop]
        width = int(count.max()) if len(count) else 0
        j = torch.arange(width, device=count.device)
        valid = j < count[:, None]
        at = (self.start[start:stop, None] + j).clamp(max=len(self.order) - 1)
        cols = self.order[at]
        if self.same_set:
            valid &= cols != torch.arange(start, stop, device=cols.device)[:, None]
        return cols, valid


def _ap_rp(rel: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
    """AP@R and R-Precision per query from relevance of the ranked list ``rel`` [n, >=max R]."""
    i = torch.arange(1, rel.shape[1] + 1, device=rel.device)
    rel = rel & (i <= r[:, None])
    precision = rel.cumsum(1).double() / i  # precision at every rank, exact in float64
    denom = r.clamp(min=1).double()
    ap = (precision * rel).sum(1) / denom
    rp = rel.sum(1).double() / denom
    return ap, rp


@torch.no_grad()
def retrieval_metrics(
    query: Tensor,
    query_labels: Tensor,
    reference: Tensor | None = None,
    reference_labels: Tensor | None = None,
    *,
    ks: Iterable[int] = (1, 2, 4, 8),
    map_at_r: bool = True,
    r_precision: bool = True,
    nmi: bool = False,
    backend: str = "torch",
    chunk_size: int = 4096,
) -> dict[str, float]:
    """Retrieval metrics of L2-normalised embeddings (similarity = inner product).

    ``reference=None``: leave-one-out on the query set (each query searches all other items).
    Otherwise query-vs-gallery. Returns fractions in [0, 1] under the keys ``"recall@K"`` for
    each K in ``ks``, ``"map@r"``, ``"r_precision"`` and ``"nmi"`` (those requested). See the
    module docstring for the exact definitions: queries with R = 0 are misses for Recall@K and
    left out of MAP@R and R-Precision. K may exceed the reference set size. Results are the same
    for every ``chunk_size``, which only bounds memory (about ``max(chunk_size, 512) x N_ref``
    floats); ``backend`` is ``"torch"`` (default) or ``"faiss"`` (``pip install "hardneg[faiss]"``).
    """
    check_backend(backend)
    same = reference is None
    if same != (reference_labels is None):
        raise ValueError("give reference and reference_labels together (or neither, for leave-one-out)")
    q, r = prepare_pair(query, reference)
    nq, nr = q.shape[0], r.shape[0]
    ql = _labels(query_labels, nq, q.device, "query_labels")
    rl = ql if same else _labels(reference_labels, nr, q.device, "reference_labels")
    if nq == 0 or nr - int(same) <= 0:
        raise ValueError(f"retrieval needs queries and references; got {nq} queries and {nr} references")
    ks = _check_ks(ks)
    kmax = max(ks, default=0)
    pos = _Positives(ql, rl, same)
    want_r = map_at_r or r_precision
    never = max(kmax, nr) + 1  # "ranked after every K" for queries without a positive
    before = torch.full((nq,), never, dtype=torch.long, device=q.device)  # items before best positive
    ap = torch.zeros(nq, dtype=torch.float64, device=q.device)
    rp = torch.zeros_like(ap)
    step = max(1, chunk_size)
    if backend == "torch":
        scratch = Scratch()
        for start, stop, s in iter_similarity_chunks(q, r, chunk_size, same):
            bmax = block_max(s, rank_block(s.shape[1], kmax), scratch)
            rq = pos.r[start:stop]
            cols, valid = pos.columns(start, stop)
            if kmax > 0 and cols.shape[1] > 0:
                # The best positive: highest similarity, then lowest column (ranking order).
                pv = s.gather(1, cols).masked_fill(~valid, -math.inf)
                best = pv.amax(1)
                best_col = torch.where(valid & (pv == best[:, None]), cols, nr).amin(1)
                has = rq > 0
                n = count_ranked_before(s, bmax, torch.where(has, best, math.inf), best_col, kmax, scratch)
                before[start:stop] = torch.where(has, n, never)
            rmax = int(rq.max()) if want_r else 0
            if rmax > 0:
                _, nn = topk_sorted(s, rmax, bmax, scratch)
                ap[start:stop], rp[start:stop] = _ap_rp(rl[nn] == ql[start:stop, None], rq)
    else:
        from hardneg.metrics._faiss import FaissSearcher

        searcher = FaissSearcher(r)
        k = min(max(kmax, int(pos.r.max()) if want_r else 0), nr - int(same))
        for start in range(0, nq, step):
            stop = min(start + step, nq)
            own = torch.arange(start, stop, device=q.device) if same else None
            _, nn = searcher.topk(q[start:stop], k, own)
            rel = rl[nn] == ql[start:stop, None]
            if k > 0:  # argmax returns the first maximum: the best positive's position
                before[start:stop] = torch.where(rel.any(1), rel.to(torch.uint8).argmax(1), never)
            if want_r:
                ap[start:stop], rp[start:stop] = _ap_rp(rel, pos.r[start:stop])

    out = {f"recall@{k}": (before < k).double().mean().item() for k in ks}
    defined = pos.r > 0
    if map_at_r:
        out["map@r"] = ap[defined].mean().item() if defined.any() else math.nan
    if r_precision:
        out["r_precision"] = rp[defined].mean().item() if defined.any() else math.nan
    if nmi:
        out["nmi"] = nmi_kmeans(q, ql, chunk_size=step)
    return out
