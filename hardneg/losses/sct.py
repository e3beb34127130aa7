"""Selectively Contrastive Triplet loss (Xuan et al., ECCV 2020).

For *hard* triplets only the negative is pushed away (L = lam * S_an), because the NCA
gradient there pulls anchor, positive and negative together and the embedding collapses.
All other triplets use the NCA triplet loss.

Which triplets are hard differs between the paper and the released code, so it is an option:
- ``paper``:    S_an > S_ap
- ``official``: S_an > S_ap  or  S_an > threshold   (latest official code, threshold 0.8)
- ``earlier``:  S_an > S_ap  and S_an > threshold   (an earlier version, threshold 0.5)

Normalisation: ``official`` = (sum_easy NCA + lam * sum_hard S_an) / (N_easy + N_hard);
``separate`` = mean_easy NCA + lam * mean_hard S_an (the earlier code). With the ``official``
rule the easy set is the code's own strict test (S_an < S_ap and S_an < threshold), so exact ties
are in neither set and not counted, as there.
"""
from __future__ import annotations

import torch
from torch import Tensor

from hardneg.losses.base import TripletLoss
from hardneg.losses.nca import nca_triplet

HARD_RULES = ("paper", "official", "earlier")
REDUCTIONS = ("official", "separate")


def hard_triplets(s_ap: Tensor, s_an: Tensor, rule: str = "official", threshold: float = 0.8) -> Tensor:
    """Boolean mask of the triplets SCT treats as hard."""
    harder = s_an > s_ap
    if rule == "paper":
        return harder
    if rule == "official":
        return harder | (s_an > threshold)
    if rule == "earlier":
        return harder & (s_an > threshold)
    raise ValueError(f"loss.hard_rule={rule!r} is unknown; choose one of {list(HARD_RULES)}")


def sct_loss(
    s_ap: Tensor,
    s_an: Tensor,
    lam: float = 1.0,
    tau: float = 0.1,
    hard_rule: str = "official",
    threshold: float = 0.8,
    reduction: str = "official",
) -> tuple[Tensor, Tensor]:
    """Return (scalar loss, hard mask)."""
    s_ap_, s_an_ = s_ap.detach(), s_an.detach()
    hard = hard_triplets(s_ap_, s_an_, hard_rule, threshold)
    if hard_rule == "official":
        # The official code's easy set is its own strict test, (S_an < S_ap) & (S_an < threshold):
        # exact ties (S_an == S_ap or S_an == threshold) are in neither set and not counted.
        easy = (s_an_ < s_ap_) & (s_an_ < threshold)
    else:
        easy = ~hard
    per_triplet = torch.where(hard, lam * s_an, nca_triplet(s_ap, s_an, tau))
    if reduction == "official":
        counted = hard | easy
        # sum / count with count 0 -> 0 (the official code sets N = 1 then); still on the graph.
        total = torch.where(counted, per_triplet, torch.zeros_like(per_triplet)).sum()
        return total / counted.sum().clamp(min=1), hard
    if reduction == "separate":
        zero = s_an[:0].sum()  # an exact 0 on the graph when one side is empty
        easy_part = per_triplet[easy].mean() if easy.any() else zero
        hard_part = per_triplet[hard].mean() if hard.any() else zero
        return easy_part + hard_part, hard
    raise ValueError(f"loss.reduction={reduction!r} is unknown; choose one of {list(REDUCTIONS)}")


class SCTLoss(TripletLoss):
    def __init__(
        self,
        lam: float = 1.0,
        tau: float = 0.1,
        hard_rule: str = "official",
        threshold: float = 0.8,
        reduction: str = "official",
    ):
        super().__init__()
        if hard_rule not in HARD_RULES:
            raise ValueError(f"loss.hard_rule={hard_rule!r} is unknown; choose one of {list(HARD_RULES)}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"loss.reduction={reduction!r} is unknown; choose one of {list(REDUCTIONS)}")
        if tau <= 0:
            raise ValueError(f"loss.tau must be > 0, got {tau}")
        self.lam, self.tau, self.hard_rule = lam, tau, hard_rule
        self.threshold, self.reduction = threshold, reduction

    def forward(self, s_ap: Tensor, s_an: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        loss, hard = sct_loss(s_ap, s_an, self.lam, self.tau, self.hard_rule, self.threshold, self.reduction)
        return loss, {"sct_hard_ratio": hard.float().mean()}

    def extra_repr(self) -> str:
        return f"lam={self.lam}, tau={self.tau}, hard_rule={self.hard_rule}, threshold={self.threshold}"
