"""A torchmetrics ``Metric`` that gathers test embeddings across DDP ranks and computes retrieval.

Every rank embeds its shard and calls ``update``; ``compute`` gathers embeddings, labels and
dataset indices from all ranks, drops duplicates (``DistributedSampler`` pads the last shard by
repeating samples) and sorts by dataset index, so the result equals one process evaluating the
whole set, ties included (ties are broken by position, which is then the dataset index order).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from hardneg.metrics.knn import check_backend
from hardneg.metrics.retrieval import retrieval_metrics


class RetrievalMetric(Metric):
    """Recall@K, MAP@R, R-Precision (and optionally NMI) of the accumulated embeddings.

    ``query_gallery=False``: leave-one-out over everything accumulated (CUB, Cars, SOP).
    ``query_gallery=True``: ``update`` must get ``is_query``; queries search the gallery items
    (In-Shop, Hotels-50K). Dataset ``indices`` must be unique over the whole evaluation set
    (queries and gallery together); they are what duplicates are detected by. ``compute``
    returns a dict of floats (see ``retrieval_metrics`` for the definitions).
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(
        self,
        ks: Iterable[int] = (1, 2, 4, 8),
        map_at_r: bool = True,
        r_precision: bool = True,
        nmi: bool = False,
        backend: str = "torch",
        chunk_size: int = 4096,
        query_gallery: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_backend(backend)
        self.ks = tuple(int(k) for k in ks)
        self.map_at_r, self.r_precision, self.nmi = map_at_r, r_precision, nmi
        self.backend, self.chunk_size, self.query_gallery = backend, chunk_size, query_gallery
        for name in ("embeddings", "labels", "indices", "is_query"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, embeddings: Tensor, labels: Tensor, indices: Tensor, is_query: Tensor | None = None) -> None:
        n = embeddings.shape[0]
        if embeddings.dim() != 2 or labels.shape != (n,) or indices.shape != (n,):
            raise ValueError(
                f"update expects embeddings [N, D], labels [N] and indices [N]; got "
                f"{tuple(embeddings.shape)}, {tuple(labels.shape)}, {tuple(indices.shape)}"
            )
        if self.query_gallery != (is_query is not None):
            raise ValueError(
                "RetrievalMetric(query_gallery=True) needs is_query in every update, and "
                "query_gallery=False (leave-one-out) takes none; got "
                f"query_gallery={self.query_gallery}, is_query {'given' if is_query is not None else 'missing'}"
            )
        self.embeddings.append(embeddings.detach().to(torch.float32))
        self.labels.append(labels.detach().to(torch.long))
        self.indices.append(indices.detach().to(torch.long))
        if is_query is not None:
            self.is_query.append(is_query.detach().to(device=embeddings.device, dtype=torch.bool).reshape(n))

    def gathered(self) -> dict[str, Tensor]:
        """The accumulated (after ``compute``'s DDP sync: all ranks') data, de-duplicated by dataset
        index and sorted by it: ``embeddings``, ``labels``, ``indices`` and maybe ``is_query``."""
        if isinstance(self.indices, list) and not self.indices:  # a tensor once synced across ranks
            raise ValueError("RetrievalMetric.compute() called before any update()")
        data = {"embeddings": dim_zero_cat(self.embeddings), "labels": dim_zero_cat(self.labels)}
        if self.query_gallery:
            data["is_query"] = dim_zero_cat(self.is_query)
        indices = dim_zero_cat(self.indices)
        unique, inverse = torch.unique(indices, sorted=True, return_inverse=True)
        # One position per dataset index: the first occurrence.
        pos = torch.arange(len(indices), device=indices.device)
        first = torch.full((len(unique),), len(indices), dtype=torch.long, device=indices.device)
        first = first.scatter_reduce(0, inverse, pos, reduce="amin")
        out = {key: value[first] for key, value in data.items()}
        out["indices"] = unique
        return out

    def compute(self) -> dict[str, float]:
        data = self.gathered()
        options = dict(
            ks=self.ks,
            map_at_r=self.map_at_r,
            r_precision=self.r_precision,
            nmi=self.nmi,
            backend=self.backend,
            chunk_size=self.chunk_size,
        )
        emb, labels = data["embeddings"], data["labels"]
        if not self.query_gallery:
            return retrieval_metrics(emb, labels, **options)
        q = data["is_query"]
        if not q.any() or q.all():
            raise ValueError(f"query/gallery evaluation needs both; got {int(q.sum())} queries of {len(q)} items")
        return retrieval_metrics(emb[q], labels[q], emb[~q], labels[~q], **options)
