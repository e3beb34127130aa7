"""Contrastive (pair) loss (Hadsell et al. 2006), in cosine-similarity form.

Over every anchor/reference pair of the similarity matrix:
    positive pair:  max(0, pos_margin - s)     (pull same-class pairs above pos_margin)
    negative pair:  max(0, s - neg_margin)     (push other-class pairs below neg_margin)
As everywhere in the project, the anchor itself and near-duplicates (s > 0.9999) are never
positives.
"""
from __future__ import annotations

import torch
from torch import Tensor

from hardneg.losses.base import PairLoss
from hardneg.mining.triplets import DUPLICATE_SIMILARITY, pair_masks

REDUCTIONS = ("nonzero", "mean")


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` where ``mask``; an exact 0 (still on the graph) when none."""
    return torch.where(mask, values, torch.zeros_like(values)).sum() / mask.sum().clamp(min=1)


class ContrastiveLoss(PairLoss):
    """``reduction``: ``nonzero`` (pytorch-metric-learning's default) averages positive and
    negative pair losses separately over the pairs that still violate their margin, then adds
    them; ``mean`` averages over all positive pairs and all negative pairs. Under DDP each rank
    averages over its own anchors' pairs, so ``nonzero`` is not exactly the global average."""

    def __init__(
        self,
        pos_margin: float = 1.0,
        neg_margin: float = 0.5,
        reduction: str = "nonzero",
        duplicate_threshold: float = DUPLICATE_SIMILARITY,
    ):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"loss.reduction={reduction!r} is unknown; choose one of {list(REDUCTIONS)}")
        self.pos_margin, self.neg_margin = pos_margin, neg_margin
        self.reduction, self.duplicate_threshold = reduction, duplicate_threshold

    def forward(self, *, embeddings, labels, ref_embeddings, ref_labels, sim, self_index):
        positive, negative = pair_masks(labels, ref_labels, self_index)
        positive &= sim.detach() < self.duplicate_threshold
        pos_loss = torch.relu(self.pos_margin - sim)
        neg_loss = torch.relu(sim - self.neg_margin)
        if self.reduction == "nonzero":
            pos_used = positive & (pos_loss.detach() > 0)
            neg_used = negative & (neg_loss.detach() > 0)
        else:
            pos_used, neg_used = positive, negative
        loss = _masked_mean(pos_loss, pos_used) + _masked_mean(neg_loss, neg_used)
        return loss, {
            "active_pos_pairs": pos_used.sum().float(),
            "active_neg_pairs": neg_used.sum().float(),
        }

    def extra_repr(self) -> str:
        return f"pos_margin={self.pos_margin}, neg_margin={self.neg_margin}, reduction={self.reduction}"
