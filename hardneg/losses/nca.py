"""NCA triplet loss, the paper's base loss (used by its `hn` and `shn` methods).

L = -log( exp(S_ap/tau) / (exp(S_ap/tau) + exp(S_an/tau)) ) = softplus((S_an - S_ap) / tau)
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from hardneg.losses.base import TripletLoss


def nca_triplet(s_ap: Tensor, s_an: Tensor, tau: float = 0.1) -> Tensor:
    """Per-triplet NCA loss; softplus keeps it finite for any similarity gap."""
    return F.softplus((s_an - s_ap) / tau)


class NCALoss(TripletLoss):
    def __init__(self, tau: float = 0.1):
        super().__init__()
        if tau <= 0:
            raise ValueError(f"loss.tau must be > 0, got {tau}")
        self.tau = tau

    def forward(self, s_ap: Tensor, s_an: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return nca_triplet(s_ap, s_an, self.tau).mean(), {}

    def extra_repr(self) -> str:
        return f"tau={self.tau}"
