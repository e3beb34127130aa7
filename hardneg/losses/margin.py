"""Margin triplet loss (Schroff et al. 2015; Hermans et al. 2017), the classic baseline.

    L = max(0, d(a, p) - d(a, n) + margin)

Written over the paper's coordinates (S_ap, S_an) like every triplet loss here. For unit
vectors the distances follow from the cosine similarity s:
- ``cosine``:            d = 1 - s
- ``euclidean``:         d = |a - p| = sqrt(2 - 2 s)
- ``squared_euclidean``: d = 2 - 2 s
(the embedding net L2-normalises, so this is exact; for other vectors it is not).
"""
from __future__ import annotations

import torch
from torch import Tensor

from hardneg.losses.base import TripletLoss

DISTANCES = ("cosine", "euclidean", "squared_euclidean")
REDUCTIONS = ("mean", "nonzero")

# sqrt has an infinite slope at 0 (a negative identical to the anchor); below this squared
# distance the distance is held constant instead (zero gradient, as for a clamped value).
_MIN_SQUARED_DISTANCE = 1e-12


def similarity_to_distance(s: Tensor, distance: str) -> Tensor:
    if distance == "cosine":
        return 1 - s
    if distance == "squared_euclidean":
        return 2 - 2 * s
    if distance == "euclidean":
        return torch.sqrt(torch.clamp(2 - 2 * s, min=_MIN_SQUARED_DISTANCE))
    raise ValueError(f"loss.distance={distance!r} is unknown; choose one of {list(DISTANCES)}")


class MarginTripletLoss(TripletLoss):
    """``reduction``: ``mean`` over all mined triplets, or ``nonzero``: over those that
    still violate the margin (pytorch-metric-learning's default, which keeps the loss from
    fading as most triplets become satisfied)."""

    def __init__(self, margin: float = 0.2, distance: str = "euclidean", reduction: str = "mean"):
        super().__init__()
        if distance not in DISTANCES:
            raise ValueError(f"loss.distance={distance!r} is unknown; choose one of {list(DISTANCES)}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"loss.reduction={reduction!r} is unknown; choose one of {list(REDUCTIONS)}")
        if margin < 0:
            raise ValueError(f"loss.margin must be >= 0, got {margin}")
        self.margin, self.distance, self.reduction = margin, distance, reduction

    def forward(self, s_ap: Tensor, s_an: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        d_ap = similarity_to_distance(s_ap, self.distance)
        d_an = similarity_to_distance(s_an, self.distance)
        per_triplet = torch.relu(d_ap - d_an + self.margin)
        active = per_triplet.detach() > 0
        if self.reduction == "mean":
            loss = per_triplet.mean()
        else:
            loss = per_triplet.sum() / active.sum().clamp(min=1)
        return loss, {"active_triplets_ratio": active.float().mean()}

    def extra_repr(self) -> str:
        return f"margin={self.margin}, distance={self.distance}, reduction={self.reduction}"
