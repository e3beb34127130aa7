"""Exact k-nearest neighbours by inner product, in bounded memory, torch or faiss."""

from __future__ import annotations

import torch
from torch import Tensor

from hardneg.metrics._chunks import iter_similarity_chunks, topk_sorted

BACKENDS = ("torch", "faiss")


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is unknown; choose one of {list(BACKENDS)}")


def prepare_pair(query: Tensor, reference: Tensor | None) -> tuple[Tensor, Tensor]:
    """float32, detached, 2-D, on the query's device; ``reference`` defaults to ``query``."""
    if query.dim() != 2:
        raise ValueError(f"embeddings must be 2-D [N, D]; got shape {tuple(query.shape)}")
    q = query.detach().to(torch.float32).contiguous()
    r = q if reference is None else reference.detach().to(device=q.device, dtype=torch.float32).contiguous()
    if r.dim() != 2 or r.shape[1] != q.shape[1]:
        raise ValueError(f"query {tuple(q.shape)} and reference {tuple(r.shape)} differ in dimension")
    return q, r


@torch.no_grad()
def knn(
    query: Tensor,
    reference: Tensor,
    k: int,
    *,
    exclude_self: bool = False,
    chunk_size: int = 4096,
    backend: str = "torch",
) -> tuple[Tensor, Tensor]:
    """The ``k`` references most similar (largest inner product) to each query.

    Returns ``(similarities [Nq, k], indices [Nq, k])``, best first. Order is deterministic:
    equal similarities go to the lower reference index first, the same for every ``chunk_size``
    and for both backends (faiss may differ on *near* ties, within float rounding, because its
    BLAS rounds differently). ``exclude_self``: query and reference are the same set and query
    ``i`` never gets reference ``i``. ``k`` is clamped to the number of available references.

    Memory: about ``max(chunk_size, 512) x N_ref`` floats at a time, never ``Nq x N_ref``.
    Backends: ``"torch"`` (default, CPU or GPU) or ``"faiss"`` (``pip install "hardneg[faiss]"``).
    """
    check_backend(backend)
    q, r = prepare_pair(query, reference)
    nq, nr = q.shape[0], r.shape[0]
    if exclude_self and nq != nr:
        raise ValueError(f"exclude_self needs query and reference to be the same set; got {nq} vs {nr} rows")
    if k < 0:
        raise ValueError(f"k must be >= 0; got {k}")
    k = min(k, nr - int(exclude_self))
    sims = q.new_empty(nq, k)
    idx = torch.empty(nq, k, dtype=torch.long, device=q.device)
    if backend == "faiss":
        from hardneg.metrics._faiss import FaissSearcher

        searcher = FaissSearcher(r)
        for start in range(0, nq, max(1, chunk_size)):
            stop = min(start + max(1, chunk_size), nq)
            own = torch.arange(start, stop, device=q.device) if exclude_self else None
            sims[start:stop], idx[start:stop] = searcher.topk(q[start:stop], k, own)
        return sims, idx
    for start, stop, s in iter_similarity_chunks(q, r, chunk_size, exclude_self):
        sims[start:stop], idx[start:stop] = topk_sorted(s, k)
    return sims, idx
