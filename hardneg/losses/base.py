"""Loss interfaces.

Triplet losses are functions of the paper's coordinates (S_ap, S_an) only: that makes
them comparable in triplet space and gives every one of them a gradient field for free.
Losses that need the whole similarity matrix (pair / proxy baselines) take (sim, labels).
"""
from __future__ import annotations

from torch import Tensor, nn


class TripletLoss(nn.Module):
    """A loss over mined triplets: ``forward(s_ap, s_an) -> (scalar, stats)``.

    ``s_ap`` and ``s_an`` are 1-D tensors of equal, non-zero length (the criterion handles
    batches without a valid triplet). ``stats`` holds detached scalars worth logging.
    """

    needs_triplets = True

    def forward(self, s_ap: Tensor, s_an: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError
