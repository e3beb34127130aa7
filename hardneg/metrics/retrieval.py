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

All are read off one ``Ranking`` (``hardneg.metrics.ranking``): Recall@K from the rank of each
query's first positive, MAP@R and R-Precision from its top R neighbours.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

from hardneg.errors import ConfigError
from hardneg.metrics.clustering import nmi_kmeans
from hardneg.metrics.knn import check_backend
from hardneg.metrics.ranking import Ranking, rank


def check_ks(ks: Iterable[int], num_references: int | None = None) -> list[int]:
    """Sorted distinct K's; each must be >= 1 and (when the reference count is known) at most
    the number of references a query can retrieve: Recall@K beyond that is 1.0 by construction
    and says nothing (e.g. SOP's K=1000 on a few hundred test images)."""
    ks = sorted({int(k) for k in ks})
    if ks and ks[0] < 1:
        raise ConfigError(f"every recall K must be >= 1; got {ks}")
    if ks and num_references is not None and ks[-1] > num_references:
        raise ConfigError(
            f"recall@{ks[-1]} asks for more neighbours than the {num_references} references each query can "
            f"retrieve (recall Ks {ks}); choose Ks <= {num_references} (data.recall_ks) or evaluate on more data"
        )
    return ks


def ap_at_r(relevant: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
    """AP@R and R-Precision per query from the relevance of its ranked list ``[n, >= max R]``."""
    i = torch.arange(1, relevant.shape[1] + 1, device=relevant.device)
    relevant = relevant & (i <= r[:, None])
    precision = relevant.cumsum(1).double() / i  # precision at every rank, exact in float64
    denom = r.clamp(min=1).double()
    return (precision * relevant).sum(1) / denom, relevant.sum(1).double() / denom


def metrics_from_ranking(
    ranking: Ranking,
    query_labels: Tensor,
    reference_labels: Tensor,
    ks: Iterable[int],
    map_at_r: bool = True,
    r_precision: bool = True,
) -> dict[str, float]:
    """Recall@K (every K), MAP@R and R-Precision (those asked for) of a ranking, as floats."""
    out = {f"recall@{k}": (ranking.first_positive < k).double().mean().item() for k in sorted({int(k) for k in ks})}
    r = ranking.num_positives
    defined = r > 0
    if (map_at_r or r_precision) and (int(r.max()) if len(r) else 0) > ranking.k:
        raise ValueError(f"MAP@R needs the top max R = {int(r.max())} neighbours; the ranking kept {ranking.k}")
    relevant = reference_labels.to(ranking.indices.device)[ranking.indices] == query_labels.to(ranking.indices.device)[:, None]
    ap, rp = ap_at_r(relevant, r)
    if map_at_r:
        out["map@r"] = ap[defined].mean().item() if defined.any() else math.nan
    if r_precision:
        out["r_precision"] = rp[defined].mean().item() if defined.any() else math.nan
    return out


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
    module docstring for the exact definitions. A K larger than the number of references is an
    error (``check_ks``). Results are the same for every ``chunk_size``, which only bounds
    memory (about ``max(chunk_size, 512) x N_ref`` floats).
    """
    check_backend(backend)
    same = reference is None
    if same != (reference_labels is None):
        raise ValueError("give reference and reference_labels together (or neither, for leave-one-out)")
    nq = query.shape[0]
    nr = nq if same else reference.shape[0]
    if nq == 0 or nr - int(same) <= 0:
        raise ValueError(f"retrieval needs queries and references; got {nq} queries and {nr} references")
    ks = check_ks(ks, nr - int(same))
    ranking = rank(query, query_labels, reference, reference_labels, rank_limit=max(ks, default=1),
                   chunk_size=chunk_size)
    ql = torch.as_tensor(query_labels).long()
    rl = ql if same else torch.as_tensor(reference_labels).long()
    out = metrics_from_ranking(ranking, ql, rl, ks, map_at_r, r_precision)
    if nmi:
        out["nmi"] = nmi_kmeans(query.detach().float(), ql.to(query.device), chunk_size=max(1, chunk_size))
    return out
