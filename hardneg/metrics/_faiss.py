"""Optional faiss backend (``pip install "hardneg[faiss]"``): exact flat inner-product search.

faiss returns the top k by value but does not promise which of several equal values it keeps,
and its BLAS rounds differently from torch's. Results are put in the project's ranking order
(similarity descending, index ascending); rows where a tie straddles the k-th place are recomputed
exactly with torch, so exact ties are broken as the torch backend breaks them. Similarities can
differ from the torch backend's in the last bit, so near-ties (within float rounding) may order
differently.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from hardneg.metrics._chunks import _full_topk

INSTALL_HINT = 'pip install "hardneg[faiss]"'


def import_faiss():
    try:
        import faiss
    except ImportError as err:
        raise ImportError(
            f'backend="faiss" needs the optional faiss package, which is not installed: {INSTALL_HINT} '
            '(or install faiss-gpu for GPU search). backend="torch" needs nothing extra.'
        ) from err
    return faiss


def _numpy(x: Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())


class FaissSearcher:
    """A flat inner-product index over ``reference`` (on the GPU when faiss and the data allow)."""

    def __init__(self, reference: Tensor):
        faiss = import_faiss()
        self.reference = reference
        self.index = faiss.IndexFlatIP(reference.shape[1])
        if reference.is_cuda and hasattr(faiss, "StandardGpuResources"):
            self._res = faiss.StandardGpuResources()
            self.index = faiss.index_cpu_to_gpu(self._res, reference.device.index or 0, self.index)
        self.index.add(_numpy(reference))

    def topk(self, queries: Tensor, k: int, self_cols: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Top-k in ranking order for ``queries``; ``self_cols[i]`` is query i's own column, never
        returned. ``k`` must not exceed the number of available references."""
        n, nr = queries.shape[0], self.reference.shape[0]
        device = queries.device
        if k <= 0 or n == 0:
            return queries.new_empty(n, max(k, 0)), torch.empty(n, max(k, 0), dtype=torch.long, device=device)
        # One extra to see a tie at the k-th place, one more for the query itself.
        kk = min(k + 1 + (self_cols is not None), nr)
        dist, ids = self.index.search(_numpy(queries), kk)
        vals = torch.from_numpy(dist).to(device)
        cols = torch.from_numpy(ids).to(device=device, dtype=torch.long)
        if self_cols is not None:
            is_self = cols == self_cols[:, None]
            # Drop the query itself, or the last column where faiss did not return it.
            is_self[:, -1] |= ~is_self.any(1)
            keep = ~is_self
            vals = vals[keep].view(n, kk - 1)
            cols = cols[keep].view(n, kk - 1)
        order = torch.argsort(cols, dim=1)  # ranking order: by column, then stable by value
        vals, cols = vals.gather(1, order), cols.gather(1, order)
        vals, order = vals.sort(dim=1, descending=True, stable=True)
        cols = cols.gather(1, order)
        if vals.shape[1] > k:
            tied = (vals[:, k] == vals[:, k - 1]).nonzero().flatten()
            vals, cols = vals[:, :k].contiguous(), cols[:, :k].contiguous()
            if len(tied):
                vals[tied], cols[tied] = self._exact(queries[tied], k, None if self_cols is None else self_cols[tied])
        return vals, cols

    def _exact(self, queries: Tensor, k: int, self_cols: Tensor | None) -> tuple[Tensor, Tensor]:
        s = queries.to(self.reference.dtype) @ self.reference.t()
        if self_cols is not None:
            s[torch.arange(len(s), device=s.device), self_cols] = -math.inf
        vals, cols = _full_topk(s, k)
        return vals.to(queries.device), cols.to(queries.device)
