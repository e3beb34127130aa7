"""Negative selection for given (anchor, positive) pairs.

Each strategy returns (negative columns [T], found [T]) for the T anchor/positive pairs;
``mask`` [A, M] marks other-class references.
"""
from __future__ import annotations

import torch
from torch import Tensor

from hardneg.mining.positives import _masked_argmax


def hardest_negative(sim, mask, anchor, positive, generator=None) -> tuple[Tensor, Tensor]:
    """The most similar negative of each anchor."""
    idx, found = _masked_argmax(sim, mask)
    return idx[anchor], found[anchor]


def semihard_negative(sim, mask, anchor, positive, generator=None) -> tuple[Tensor, Tensor]:
    """The most similar negative that is still less similar than the chosen positive.

    The paper's definition: negatives with S_an > S_ap are not allowed; an anchor whose
    every negative is harder than its positive gives no triplet.
    """
    rows = sim[anchor]
    s_ap = rows.gather(1, positive[:, None])
    return _masked_argmax(rows, mask[anchor] & (rows < s_ap))


def easy_negative(sim, mask, anchor, positive, generator=None) -> tuple[Tensor, Tensor]:
    """The least similar negative."""
    idx, found = _masked_argmax(-sim, mask)
    return idx[anchor], found[anchor]


def random_negative(sim, mask, anchor, positive, generator=None) -> tuple[Tensor, Tensor]:
    """A uniformly random negative, drawn independently for every triplet."""
    scores = torch.rand((len(anchor), sim.shape[1]), generator=generator, device="cpu").to(sim.device)
    return _masked_argmax(scores, mask[anchor])


NEGATIVE_STRATEGIES = {
    "hardest": hardest_negative,
    "semihard": semihard_negative,
    "easy": easy_negative,
    "random": random_negative,
}
