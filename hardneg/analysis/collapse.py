"""Collapse diagnostics of a set of embeddings (the paper's failure mode: every embedding
becomes the same point, so every triplet sits at (1, 1) in triplet space).

All three are cheap at benchmark scale: O(N·D) for the mean similarity and a D x D
eigendecomposition for the spectrum, never the N x N similarity matrix.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# A coordinate counts as "in use" when its spread over the set is at least this share of
# the spread an isotropic cloud of unit vectors has per coordinate (1/sqrt(D)).
DIM_IN_USE_FRACTION = 0.1


def mean_similarity(embeddings: Tensor) -> float:
    """Mean cosine similarity over all pairs i != j.

    sum_{i,j} <e_i, e_j> = |sum_i e_i|^2, so the off-diagonal mean needs no N x N matrix.
    """
    e = F.normalize(embeddings.double(), dim=1)
    n = len(e)
    if n < 2:
        return float("nan")
    total = e.sum(0).pow(2).sum() - e.pow(2).sum()
    return float(total / (n * (n - 1)))


def singular_values(embeddings: Tensor) -> Tensor:
    """Singular values of the (uncentred) [N, D] matrix of unit embeddings, via the D x D Gram.

    Uncentred on purpose: a collapsed set (all rows the same vector) then has exactly one
    non-zero singular value, whereas centring would hide the shared direction.
    """
    e = F.normalize(embeddings.double(), dim=1)
    eig = torch.linalg.eigvalsh(e.T @ e).clamp(min=0)
    return eig.flip(0).sqrt()


def effective_rank(embeddings: Tensor) -> tuple[float, float]:
    """(effective rank, singular-value entropy) after Roy & Vetterli (2007).

    p_i = s_i / sum(s); entropy H = -sum p_i log p_i; effective rank exp(H), between 1 (all
    embeddings on one line: collapse) and D (a spectrum spread evenly over every dimension).
    """
    s = singular_values(embeddings)
    if float(s.sum()) == 0.0:
        return 0.0, 0.0
    p = s / s.sum()
    p = p[p > 0]
    entropy = float(-(p * p.log()).sum())
    return math.exp(entropy), entropy


def dims_in_use(embeddings: Tensor, fraction: float = DIM_IN_USE_FRACTION) -> float:
    """Share of embedding coordinates whose standard deviation over the set is at least
    ``fraction / sqrt(D)`` (see ``DIM_IN_USE_FRACTION``). A collapsed set uses none."""
    e = F.normalize(embeddings.double(), dim=1)
    if len(e) < 2:
        return float("nan")
    std = e.std(dim=0)
    return float((std >= fraction / math.sqrt(e.shape[1])).double().mean())


def collapse_stats(embeddings: Tensor) -> dict[str, float]:
    """``mean_similarity``, ``effective_rank``, ``sv_entropy`` and ``dims_in_use`` of the set."""
    embeddings = embeddings.detach().float().cpu()
    rank, entropy = effective_rank(embeddings)
    return {
        "mean_similarity": mean_similarity(embeddings),
        "effective_rank": rank,
        "sv_entropy": entropy,
        "dims_in_use": dims_in_use(embeddings),
    }
