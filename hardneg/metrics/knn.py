"""Exact k-nearest neighbours by inner product, in bounded memory (a ``Ranking`` without labels)."""

from __future__ import annotations

import torch
from torch import Tensor

from hardneg.errors import ConfigError
from hardneg.metrics.ranking import rank

BACKENDS = ("torch",)


def check_backend(backend: str) -> None:
    """Only the exact chunked torch search exists (CPU or GPU). A faiss backend existed; it was
    slower than this one on the project's bench and ordered exact ties differently, so results
    depended on the backend. It was removed rather than kept as a second, disagreeing answer."""
    if backend == "faiss":
        raise ConfigError(
            "eval.backend=faiss is no longer supported: the exact torch search is faster on CPU and GPU and "
            "breaks ties the documented way; remove eval.backend (or set eval.backend=torch)"
        )
    if backend not in BACKENDS:
        raise ConfigError(f"eval.backend={backend!r} is unknown; choose one of {list(BACKENDS)}")


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

    Returns ``(similarities [Nq, k], indices [Nq, k])``, best first; equal similarities go to
    the lower reference index first, the same for every ``chunk_size``. ``exclude_self``: query
    and reference are the same set and query ``i`` never gets reference ``i``. ``k`` is clamped
    to the number of available references. Memory: about ``max(chunk_size, 512) x N_ref``
    floats at a time, never ``Nq x N_ref``.
    """
    check_backend(backend)
    if exclude_self and query.shape[0] != reference.shape[0]:
        raise ValueError(
            f"exclude_self needs query and reference to be the same set; got {query.shape[0]} vs {reference.shape[0]} rows"
        )
    if k < 0:
        raise ValueError(f"k must be >= 0; got {k}")
    ranking = rank(query, reference=None if exclude_self else reference, k=k, chunk_size=chunk_size)
    return ranking.similarities, ranking.indices
