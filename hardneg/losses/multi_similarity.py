"""Multi-Similarity loss with its own pair mining (Wang et al., CVPR 2019).

Mining, per anchor i (on values, without gradient):
    keep negative k  if  S_ik + margin > min over positives j of S_ij
    keep positive j  if  S_ij - margin < max over negatives k of S_ik
Loss, averaged over *all* anchors (as the authors' code: anchors left without a kept
positive or negative contribute 0 but still count):
    1/alpha * log(1 + sum_j exp(-alpha (S_ij - base))) + 1/beta * log(1 + sum_k exp(beta (S_ik - base)))
The anchor itself and near-duplicates (s > 0.9999) are never positives (the authors' code
drops s > 1 - 1e-5).
"""
from __future__ import annotations

import torch
from torch import Tensor

from hardneg.losses.base import PairLoss, log1p_sum_exp
from hardneg.mining.triplets import DUPLICATE_SIMILARITY, pair_masks


def multi_similarity_pairs(sim: Tensor, positive: Tensor, negative: Tensor, margin: float) -> tuple[Tensor, Tensor]:
    """The MS-mined (positive, negative) pair masks, from the candidate masks."""
    sim = sim.detach()
    hardest_pos = sim.masked_fill(~positive, float("inf")).amin(dim=1, keepdim=True)
    hardest_neg = sim.masked_fill(~negative, float("-inf")).amax(dim=1, keepdim=True)
    return positive & (sim - margin < hardest_neg), negative & (sim + margin > hardest_pos)


class MultiSimilarityLoss(PairLoss):
    def __init__(
        self,
        alpha: float = 2.0,
        beta: float = 50.0,
        base: float = 0.5,
        margin: float = 0.1,
        duplicate_threshold: float = DUPLICATE_SIMILARITY,
    ):
        super().__init__()
        if alpha <= 0 or beta <= 0:
            raise ValueError(f"loss.alpha and loss.beta must be > 0, got {alpha} and {beta}")
        self.alpha, self.beta, self.base, self.margin = alpha, beta, base, margin
        self.duplicate_threshold = duplicate_threshold

    def forward(self, *, embeddings, labels, ref_embeddings, ref_labels, sim, self_index):
        positive, negative = pair_masks(labels, ref_labels, self_index)
        positive &= sim.detach() < self.duplicate_threshold
        pos_kept, neg_kept = multi_similarity_pairs(sim, positive, negative, self.margin)
        valid = pos_kept.any(dim=1) & neg_kept.any(dim=1)
        pos_term = log1p_sum_exp(-self.alpha * (sim - self.base), pos_kept) / self.alpha
        neg_term = log1p_sum_exp(self.beta * (sim - self.base), neg_kept) / self.beta
        per_anchor = torch.where(valid, pos_term + neg_term, torch.zeros_like(pos_term))
        loss = per_anchor.sum() / sim.shape[0]
        return loss, {
            "ms_pos_pairs": pos_kept.sum().float(),
            "ms_neg_pairs": neg_kept.sum().float(),
            "ms_valid_anchors": valid.sum().float(),
        }

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, base={self.base}, margin={self.margin}"
