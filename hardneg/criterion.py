"""Loss + miner as one callable, usable inside or outside the framework.

    criterion = Criterion(SCTLoss(), TripletMiner("easy", "hardest"))
    loss, stats = criterion(F.normalize(embeddings, dim=1), labels)

Two paths:
- triplet losses (``needs_triplets = True``): compute the step's similarity matrix once, mine
  (indices only), read S_ap and S_an out of the matrix, hand them to the loss;
- pair and proxy losses (``needs_triplets = False``): hand the matrix (with gradient) and the
  embeddings to the loss. Mining then only serves the stats (``hn_ratio``, the triplet-space
  points) and runs only when they are asked for (``stats=True``, the default).

The embeddings must be L2-normalised (the similarity is their dot product): the criterion
checks their norms (one O(B * D) reduction) and raises a ``UserError`` otherwise. Under autocast
the similarity matrix and the loss are computed in float32 (at least), whatever the embeddings'
dtype: mining decisions and the loss must not depend on bf16/fp16 rounding of the similarities.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import Tensor, nn

from hardneg import _fast
from hardneg.errors import UserError
from hardneg.mining import TripletMiner
from hardneg.mining.triplets import Triplets, default_self_index

# How far from 1 an embedding's norm may be (bf16 rounding is ~0.4 %; a raw embedding is far off).
UNIT_NORM_TOLERANCE = 1e-2


def pick_similarities(sim: Tensor, anchors: Tensor, refs: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """Entries ``sim[rows, cols]`` of ``sim = anchors @ refs.T`` with the dot products' gradient."""
    return _fast.pick_similarities(sim, anchors, refs, rows, cols)


class Criterion(nn.Module):
    def __init__(self, loss: nn.Module, miner: TripletMiner | None = None):
        super().__init__()
        self.loss = loss
        self.miner = miner if miner is not None else TripletMiner()

    @property
    def needs_triplets(self) -> bool:
        return getattr(self.loss, "needs_triplets", True)

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        ref_embeddings: Tensor | None = None,
        ref_labels: Tensor | None = None,
        self_index: Tensor | None = None,
        gather: Callable[[Tensor], Tensor] | None = None,
        stats: bool = True,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss of unit-norm ``embeddings`` [B, D] as anchors against ``ref_embeddings`` [M, D].

        Without references the batch is mined against itself. ``self_index[i]`` is anchor
        i's column among the references (default ``i``: the anchors come first).
        Returns the loss and detached stats; ``stats["points"]`` is the [T, 2] array of
        (S_ap, S_an) of the mined triplets, the rest are scalars. ``stats=False`` skips the
        mining a pair/proxy loss does not need (triplet losses mine anyway; their stats are free).

        ``gather`` (DDP, ``mining.scope=global``; see ``MetricLearningModule.training_step``)
        concatenates a tensor's rows over all ranks with gradients; ``ref_embeddings`` then
        hold the global batch. The loss and the stats become the one-device ones, the same
        on every rank: triplet losses see the pooled (S_ap, S_an) of every rank's triplets,
        pair/proxy losses the whole global batch as anchors.
        """
        if ref_embeddings is None:
            ref_embeddings, ref_labels = embeddings, labels
        if self_index is None:
            self_index = default_self_index(embeddings)
        # A NaN/inf embedding would silently drop out of mining (every comparison with NaN is
        # false): remember it and make the loss non-finite, so the step is skipped or training
        # stops visibly instead of going on with a broken model.
        finite = check_unit_norm(embeddings, ref_embeddings)
        with _full_precision(embeddings.device.type):
            anchors, refs = _at_least_float32(embeddings), _at_least_float32(ref_embeddings)
            if ref_embeddings is embeddings:
                refs = anchors  # keep self-mining recognisable (one gradient buffer)
            if self.needs_triplets:
                loss, out = self._triplet_path(anchors, labels, refs, ref_labels, self_index, gather)
            else:
                loss, out = self._pair_path(anchors, labels, refs, ref_labels, self_index, gather, stats)
        return (loss if finite else loss + float("nan")), out  # NaN still on the graph

    # -- triplet losses: mine, pick S_ap and S_an, loss over them -----------------------------
    def _triplet_path(self, anchors, labels, refs, ref_labels, self_index, gather):
        # Small matrices: plain autograd through the dense matrix (fewest ops). Large ones: the
        # matrix needs no graph, the 2T picked entries get a sparse backward (hardneg/_fast.py).
        dense = not _fast.large(len(anchors) * len(refs))
        with torch.set_grad_enabled(torch.is_grad_enabled() and dense):
            sim = anchors @ refs.T
        # The sparse path's matrix is private and gradient-free: the miner may use it as scratch.
        triplets = self.miner(sim, labels, ref_labels, self_index, inplace=not dense)
        rows = torch.cat([triplets.anchor, triplets.anchor])
        cols = torch.cat([triplets.positive, triplets.negative])
        picked = sim[rows, cols] if dense else _fast.pick_similarities(sim, anchors, refs, rows, cols)
        s_ap, s_an = picked.view(2, -1).unbind()
        if gather is not None:
            pooled = gather(torch.stack([s_ap, s_an], dim=1))  # [T_global, 2], in rank order
            s_ap, s_an = pooled[:, 0], pooled[:, 1]
        stats = triplet_stats(s_ap.detach(), s_an.detach())
        if len(s_ap) == 0:
            # No valid triplet: an exact zero (sum of an empty selection) that is still connected
            # to the embeddings, so backward works, gives zero gradients and DDP ranks stay in
            # step. Pooled: no rank has a triplet, so every rank takes this branch.
            return s_an.sum(), stats
        loss, loss_stats = self.loss(s_ap, s_an)
        stats.update({k: v.detach() for k, v in loss_stats.items()})
        return loss, stats

    # -- pair and proxy losses: the whole matrix -------------------------------------------
    def _pair_path(self, anchors, labels, refs, ref_labels, self_index, gather, with_stats):
        if gather is not None:
            # A pair loss's normalisation is its own business (per pair, per anchor, per
            # proxy...), so each rank computes it over the whole gathered batch instead of
            # pooling parts; that costs a [M, M] instead of a [B, M] matrix.
            anchors, labels, self_index = refs, ref_labels, default_self_index(refs)
        sim = anchors @ refs.T
        loss, loss_stats = self.loss(
            embeddings=anchors, labels=labels, ref_embeddings=refs,
            ref_labels=ref_labels, sim=sim, self_index=self_index,
        )
        stats = {}
        if with_stats:  # what easy/hardest (or the configured) mining would see: hn_ratio, points
            sim = sim.detach()
            triplets = self.miner(sim, labels, ref_labels, self_index)
            stats = triplet_stats(*_entries(sim, triplets))
        stats.update({k: v.detach() for k, v in loss_stats.items()})
        return loss, stats


def _entries(sim: Tensor, t: Triplets) -> tuple[Tensor, Tensor]:
    return sim[t.anchor, t.positive], sim[t.anchor, t.negative]


def triplet_stats(s_ap: Tensor, s_an: Tensor) -> dict[str, Tensor]:
    """Detached stats of the mined triplets: their count, (S_ap, S_an) points and means."""
    points = torch.stack([s_ap, s_an], dim=1)
    stats = {"valid_triplets": torch.tensor(float(len(s_ap))), "points": points}
    if len(s_ap):
        mean_ap, mean_an = points.mean(dim=0).unbind()
        stats.update(hn_ratio=(s_an > s_ap).float().mean(), s_ap=mean_ap, s_an=mean_an)
    return stats


def check_unit_norm(embeddings: Tensor, ref_embeddings: Tensor) -> bool:
    """Raise if an embedding is finite but not unit-norm; return False if one is NaN/inf.

    One O((B + M) * D) reduction and one host sync per step."""
    with torch.no_grad():
        norms = torch.linalg.vector_norm(embeddings.detach().float(), dim=1)
        if ref_embeddings is not embeddings:
            norms = torch.cat([norms, torch.linalg.vector_norm(ref_embeddings.detach().float(), dim=1)])
        if norms.numel() == 0:
            return True
        low, high = torch.stack(torch.aminmax(norms)).tolist()
    if not (abs(low) < float("inf") and abs(high) < float("inf")):  # NaN fails both
        return False
    if low < 1 - UNIT_NORM_TOLERANCE or high > 1 + UNIT_NORM_TOLERANCE:
        raise UserError(
            f"Criterion expects L2-normalised embeddings (the similarity is their dot product), got norms "
            f"in [{low:.4g}, {high:.4g}]. Normalise them first: torch.nn.functional.normalize(x, dim=1) "
            "(hardneg's EmbeddingNet does)."
        )
    return True


def _full_precision(device_type: str):
    """Autocast off (if on): the similarity matrix and the loss in float32 or better."""
    on = torch.is_autocast_enabled(device_type)
    return torch.autocast(device_type, enabled=False) if on else contextlib.nullcontext()


def _at_least_float32(x: Tensor) -> Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
