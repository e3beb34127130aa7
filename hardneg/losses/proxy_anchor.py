"""Proxy-Anchor loss (Kim et al., CVPR 2020): one learnable proxy per training class.

With s(x, p) the cosine similarity of embedding x and proxy p, P+ the proxies whose class
is in the batch, X_p+ / X_p- the batch samples of / not of p's class:
    L = 1/|P+| sum_{p in P+} log(1 + sum_{x in X_p+} exp(-alpha (s(x,p) - margin)))
      + 1/|P|  sum_{p in P}  log(1 + sum_{x in X_p-} exp( alpha (s(x,p) + margin)))

The proxies are parameters of this module and must be optimised: the authors train them
with a learning rate 100x the network's, exposed as ``lr_multiplier`` for the optimiser's
parameter group. ``num_classes`` is the number of *training* classes (labels 0..C-1).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hardneg.losses.base import PairLoss, log1p_sum_exp


class ProxyAnchorLoss(PairLoss):
    def __init__(
        self,
        num_classes: int,
        dim: int,
        margin: float = 0.1,
        alpha: float = 32.0,
        lr_multiplier: float = 100.0,
    ):
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(
                f"loss.num_classes must be a positive int (the number of training classes), got {num_classes!r}"
            )
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"loss.dim must be a positive int (the embedding size), got {dim!r}")
        self.num_classes, self.dim = num_classes, dim
        self.margin, self.alpha, self.lr_multiplier = margin, alpha, lr_multiplier
        self.proxies = nn.Parameter(torch.empty(num_classes, dim))
        nn.init.kaiming_normal_(self.proxies, mode="fan_out")  # the authors' initialisation

    def forward(self, *, embeddings, labels, ref_embeddings, ref_labels, sim, self_index):
        # The reference set is the whole (global, under DDP) batch, which holds the anchors:
        # the proxy terms aggregate over the batch, so every rank computes the one-device loss.
        x, y = ref_embeddings, ref_labels
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise ValueError(
                f"loss.num_classes={self.num_classes} but a training label is {int(y.max())} "
                f"(min {int(y.min())}); labels must be 0..num_classes-1"
            )
        cos = F.normalize(x, dim=1) @ F.normalize(self.proxies, dim=1).T  # [M, C]
        own_class = F.one_hot(y, self.num_classes).bool()
        pos_term = log1p_sum_exp(-self.alpha * (cos - self.margin), own_class, dim=0)  # [C]
        neg_term = log1p_sum_exp(self.alpha * (cos + self.margin), ~own_class, dim=0)
        proxies_with_positives = own_class.any(dim=0)
        loss = pos_term.sum() / proxies_with_positives.sum().clamp(min=1) + neg_term.sum() / self.num_classes
        return loss, {"proxies_in_batch": proxies_with_positives.sum().float()}

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, dim={self.dim}, margin={self.margin}, "
            f"alpha={self.alpha}, lr_multiplier={self.lr_multiplier}"
        )
