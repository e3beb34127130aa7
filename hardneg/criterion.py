"""Loss + miner as one callable, usable inside or outside the framework.

    criterion = Criterion(SCTLoss(), TripletMiner("easy", "hardest"))
    loss, stats = criterion(embeddings, labels)

The one similarity matrix of the step is computed here and mined (indices only); a triplet
loss reads S_ap and S_an out of it. Pair and proxy losses (``needs_triplets = False``) get
the matrix and the embeddings instead; the mined triplets are then still recorded, so
``hn_ratio`` and the triplet-space figures exist for every loss.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from hardneg.mining import TripletMiner
from hardneg.mining.triplets import default_self_index


class Criterion(nn.Module):
    def __init__(self, loss: nn.Module, miner: TripletMiner | None = None):
        super().__init__()
        self.loss = loss
        self.miner = miner if miner is not None else TripletMiner()

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        ref_embeddings: Tensor | None = None,
        ref_labels: Tensor | None = None,
        self_index: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss of ``embeddings`` [B, D] as anchors against ``ref_embeddings`` [M, D].

        Without references the batch is mined against itself. ``self_index[i]`` is anchor
        i's column among the references (default ``i``: the anchors come first).
        Returns the loss and detached stats; ``stats["points"]`` is the [T, 2] array of
        (S_ap, S_an) of the mined triplets, the rest are scalars.
        """
        if ref_embeddings is None:
            ref_embeddings, ref_labels = embeddings, labels
        if self_index is None:
            self_index = default_self_index(embeddings)
        sim = embeddings @ ref_embeddings.T
        triplets = self.miner(sim, labels, ref_labels, self_index)
        s_ap = sim[triplets.anchor, triplets.positive]
        s_an = sim[triplets.anchor, triplets.negative]
        stats = {
            "valid_triplets": torch.tensor(float(len(triplets))),
            "points": torch.stack([s_ap.detach(), s_an.detach()], dim=1),
        }
        if len(triplets):
            stats.update(
                hn_ratio=(s_an > s_ap).float().mean().detach(),
                s_ap=s_ap.mean().detach(),
                s_an=s_an.mean().detach(),
            )

        if getattr(self.loss, "needs_triplets", True):
            if len(triplets) == 0:
                # No valid triplet: a zero still connected to the graph, so backward works
                # and DDP ranks stay in step.
                return sim.sum() * 0.0, stats
            loss, loss_stats = self.loss(s_ap, s_an)
        else:
            loss, loss_stats = self.loss(
                embeddings=embeddings, labels=labels, ref_embeddings=ref_embeddings,
                ref_labels=ref_labels, sim=sim, self_index=self_index,
            )
        stats.update({k: v.detach() for k, v in loss_stats.items()})
        return loss, stats
