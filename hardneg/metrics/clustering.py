"""NMI of a k-means clustering (as many clusters as classes), in bounded memory.

k-means is plain Lloyd iterations from a seeded random choice of distinct points (as faiss and
PML do); assignments are computed in chunks, so memory stays at ``chunk_size x n_clusters``.
At SOP scale (60k points, 11k clusters) one iteration is a 60k x 11k x 512 matmul, which is why
NMI is optional.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _assign(x: Tensor, centroids: Tensor, chunk_size: int) -> Tensor:
    half_sq = 0.5 * (centroids * centroids).sum(1)
    out = torch.empty(len(x), dtype=torch.long, device=x.device)
    for a in range(0, len(x), chunk_size):
        # argmin ||x - c||^2 == argmax (x.c - ||c||^2 / 2)
        out[a : a + chunk_size] = (x[a : a + chunk_size] @ centroids.t() - half_sq).argmax(1)
    return out


@torch.no_grad()
def kmeans(x: Tensor, n_clusters: int, *, n_iter: int = 20, seed: int = 0, chunk_size: int = 4096) -> Tensor:
    """Cluster index of every row of ``x`` (Euclidean k-means; deterministic for a given seed)."""
    x = x.detach().to(torch.float32)
    n = len(x)
    if not 1 <= n_clusters <= n:
        raise ValueError(f"n_clusters must be in [1, {n}]; got {n_clusters}")
    gen = torch.Generator().manual_seed(seed)
    centroids = x[torch.randperm(n, generator=gen)[:n_clusters].to(x.device)].clone()
    assign = _assign(x, centroids, chunk_size)
    for _ in range(n_iter):
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=n_clusters)
        nonempty = counts > 0  # an empty cluster keeps its centroid
        centroids[nonempty] = sums[nonempty] / counts[nonempty, None].to(x.dtype)
        new = _assign(x, centroids, chunk_size)
        if torch.equal(new, assign):
            break
        assign = new
    return assign


def _entropy(counts: Tensor) -> float:
    p = counts[counts > 0].double() / counts.sum()
    return float(-(p * p.log()).sum())


def nmi(labels_true: Tensor, labels_pred: Tensor) -> float:
    """Normalised mutual information, arithmetic-mean normalisation (scikit-learn's default)."""
    if labels_true.shape != labels_pred.shape or labels_true.dim() != 1:
        raise ValueError("nmi needs two 1-D label tensors of the same length")
    _, t = torch.unique(labels_true.cpu(), return_inverse=True)
    _, p = torch.unique(labels_pred.cpu(), return_inverse=True)
    nt, np_ = int(t.max()) + 1, int(p.max()) + 1
    if nt == np_ == 1:
        return 1.0  # both trivial: identical partitions
    joint = torch.bincount(t * np_ + p, minlength=nt * np_).double()
    n = joint.sum()
    ht, hp = _entropy(torch.bincount(t)), _entropy(torch.bincount(p))
    nz = joint.nonzero().flatten()
    pij = joint[nz] / n
    pi = torch.bincount(t).double()[nz // np_] / n
    pj = torch.bincount(p).double()[nz % np_] / n
    mi = float((pij * (pij.log() - pi.log() - pj.log())).sum())
    denom = 0.5 * (ht + hp)
    return max(0.0, mi / denom) if denom > 0 else 0.0


def nmi_kmeans(x: Tensor, labels: Tensor, *, seed: int = 0, chunk_size: int = 4096) -> float:
    """NMI between ``labels`` and a k-means clustering of ``x`` into as many clusters as classes."""
    n_classes = len(torch.unique(labels))
    return nmi(labels, kmeans(x, n_classes, seed=seed, chunk_size=chunk_size))
