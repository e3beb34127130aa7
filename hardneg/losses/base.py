"""Loss interfaces.

Triplet losses are functions of the paper's coordinates (S_ap, S_an) only: that makes
them comparable in triplet space and gives every one of them a gradient field for free.
Losses that need the whole similarity matrix (pair / proxy baselines) take (sim, labels).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class TripletLoss(nn.Module):
    """A loss over mined triplets: ``forward(s_ap, s_an) -> (scalar, stats)``.

    ``s_ap`` and ``s_an`` are 1-D tensors of equal, non-zero length (the criterion handles
    batches without a valid triplet). ``stats`` holds detached scalars worth logging.
    """

    needs_triplets = True

    def forward(self, s_ap: Tensor, s_an: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError


class PairLoss(nn.Module):
    """A loss over the whole similarity matrix or the embeddings (pair / proxy baselines).

    ``forward(*, embeddings, labels, ref_embeddings, ref_labels, sim, self_index)``:
    rows of ``sim`` [A, M] are the anchors ``embeddings``, columns the references
    (the global batch under DDP; the anchors themselves otherwise). ``self_index[i]`` is
    anchor i's own column (``None``: not among the references). ``sim`` carries gradient.
    """

    needs_triplets = False

    def forward(self, *, embeddings, labels, ref_embeddings, ref_labels, sim, self_index):
        raise NotImplementedError


def log1p_sum_exp(logits: Tensor, mask: Tensor, dim: int = 1) -> Tensor:
    """``log(1 + sum_j mask_j * exp(logits_j))`` along ``dim``, overflow-safe.

    Masked-out entries contribute neither value nor gradient (a fully masked row gives 0
    with zero gradient, never NaN, unlike ``logsumexp`` over an all ``-inf`` row).
    """
    logits = logits.masked_fill(~mask, float("-inf"))
    # The shift is a constant of the gradient (it cancels), so it is taken without graph.
    shift = logits.detach().amax(dim, keepdim=True).clamp(min=0)
    total = torch.exp(logits - shift).sum(dim) + torch.exp(-shift.squeeze(dim))
    return torch.log(total) + shift.squeeze(dim)
