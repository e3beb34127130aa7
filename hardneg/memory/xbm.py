"""Cross-batch memory around the criterion: anchors are the batch, references the batch plus
a FIFO bank of past embeddings (XBM, Wang et al., CVPR 2020).

    memory = CrossBatchMemory(size=4096, dim=64, start_step=1000, use="both")
    loss, stats = memory(criterion, embeddings, labels, indices, ref, ref_labels, self_index, gather, step)

What it guarantees:
- The bank holds *past* steps only: the current batch is enqueued after its loss, so an anchor's
  own current embedding is never among the references twice (its column in the batch is its
  ``self_index``). Bank entries of the anchor's own image (an earlier epoch's embedding,
  ``exclude_same_image``) are neither positives nor negatives: with easy-positive mining the
  stale copy of oneself would otherwise be the positive of every anchor. The duplicate rule
  (similarity >= 0.9999 is never a positive) applies to bank entries as to batch entries.
- ``use=negatives``: same-class bank entries are ignored, so positives come from the batch only;
  ``use=both``: the bank gives positives and negatives.
- Under DDP every rank enqueues the *global* batch (all ranks' samples in rank order), so the banks
  are identical and global mining stays exactly the one-device result.
- Gradients flow only into the current batch: bank rows are detached copies.

How entries are ignored without touching the miner: an ignored (anchor, bank entry) similarity
is set to +inf in the matrix the miner sees (restored afterwards). +inf is above the duplicate
threshold, so the entry is no usable positive, and it is same-class, so it is no negative.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from hardneg import distributed
from hardneg.errors import ConfigError
from hardneg.memory.bank import MemoryBank

USES = ("both", "negatives")
IGNORED = float("inf")  # above any duplicate threshold: not a positive; same class: not a negative


class CrossBatchMemory(nn.Module):
    def __init__(self, size: int, dim: int, start_step: int = 0, use: str = "both", exclude_same_image: bool = True):
        super().__init__()
        if use not in USES:
            raise ConfigError(f"memory.use={use!r} is unknown; choose one of {list(USES)}")
        if start_step < 0:
            raise ConfigError(f"memory.start_step must be >= 0, got {start_step}")
        self.bank = MemoryBank(size, dim)
        self.start_step, self.use, self.exclude_same_image = start_step, use, exclude_same_image

    def check_loss(self, loss: nn.Module) -> None:
        """Reject losses the memory cannot serve, at build time, with the reason."""
        name = type(loss).__name__
        if hasattr(loss, "proxies"):
            raise ConfigError(
                f"memory=xbm does nothing for {name}: it compares embeddings with class proxies, not with "
                "other samples, so a bank of past embeddings is never read. Use memory=none."
            )
        if not getattr(loss, "needs_triplets", True) and self.use == "negatives":
            raise ConfigError(
                f"memory.use=negatives needs a triplet loss: {name} reads every pair of the matrix itself, "
                "bank positives included. Use memory.use=both or a triplet loss (sct, nca, margin)."
            )

    def forward(self, criterion, embeddings: Tensor, labels: Tensor, indices: Tensor | None, ref: Tensor,
                ref_labels: Tensor, self_index: Tensor, gather=None, step: int = 0) -> tuple[Tensor, dict]:
        """The criterion's loss and stats with the bank among the references, then enqueue."""
        if indices is None:
            indices = torch.full_like(labels, -1)
        batch = global_batch(embeddings.detach(), labels, indices)
        bank_size = torch.tensor(float(len(self.bank)))  # the entries this step mines against
        if step >= self.start_step and len(self.bank) > 0:
            loss, stats = self._with_bank(criterion, embeddings, labels, indices, ref, ref_labels, self_index,
                                          gather, batch)
        else:
            loss, stats = criterion(embeddings, labels, ref, ref_labels, self_index, gather=gather)
        # The batch is identical on every rank, so is this decision. A non-finite embedding
        # would poison every later step's mining: such a batch is not remembered.
        if step >= self.start_step and bool(torch.isfinite(batch[0]).all()):
            self.bank.enqueue(*batch)
        stats["bank_size"] = bank_size if step >= self.start_step else torch.tensor(0.0)
        return loss, stats

    def _with_bank(self, criterion, embeddings, labels, indices, ref, ref_labels, self_index, gather, batch):
        bank_emb, bank_labels, bank_indices = self.bank.get()
        if not getattr(criterion.loss, "needs_triplets", True) and gather is not None:
            # A pair loss under DDP is computed by every rank over the whole global batch (see
            # Criterion); it would take *all* references as anchors, bank included, so the
            # global batch is made the anchors here instead (same gradient argument).
            embeddings, labels, indices, gather = ref, ref_labels, batch[2], None
            self_index = torch.arange(len(ref), device=ref.device)
        references = torch.cat([ref, bank_emb.to(ref)])
        reference_labels = torch.cat([ref_labels, bank_labels.to(ref_labels)])
        miner = BankMiner(criterion.miner, len(ref), self.ignored(labels, indices, bank_labels, bank_indices))
        criterion.miner = miner
        try:
            loss, stats = criterion(embeddings, labels, references, reference_labels, self_index, gather=gather)
        finally:
            criterion.miner = miner.inner
        from_bank = miner.bank_negative.to(stats["points"].dtype)
        if gather is not None:  # the stats' points are pooled over ranks in rank order: so is the flag
            from_bank = gather(from_bank[:, None])[:, 0]
        stats.update(split_hn_ratio(stats["points"], from_bank.bool()))
        return loss, stats

    def ignored(self, labels: Tensor, indices: Tensor, bank_labels: Tensor, bank_indices: Tensor) -> Tensor | None:
        """[A, K]: bank entries that are neither positive nor negative for each anchor."""
        mask = None
        if self.use == "negatives":
            mask = labels[:, None] == bank_labels[None, :]
        if self.exclude_same_image:
            same = (indices[:, None] == bank_indices[None, :]) & (indices[:, None] >= 0)
            mask = same if mask is None else mask | same
        return mask

    def extra_repr(self) -> str:
        return f"start_step={self.start_step}, use={self.use}, exclude_same_image={self.exclude_same_image}"


class BankMiner:
    """The criterion's miner, seeing the ignored bank entries as +inf; records which mined
    negatives came from the bank (columns ``>= offset``)."""

    def __init__(self, inner, offset: int, ignore: Tensor | None):
        self.inner, self.offset, self.ignore = inner, offset, ignore
        self.bank_negative = torch.zeros(0, dtype=torch.bool)

    def __getattr__(self, name):  # scope, pos, neg... of the wrapped miner
        return getattr(self.inner, name)

    def __call__(self, sim: Tensor, anchor_labels, ref_labels, self_index=None, inplace: bool = False):
        if self.ignore is None or not bool(self.ignore.any()):
            triplets = self.inner(sim, anchor_labels, ref_labels, self_index, inplace=inplace)
        else:
            scratch = sim.detach() if inplace else sim.detach().clone()
            bank_block = scratch[:, self.offset:]  # a view: writes land in `scratch`
            saved = bank_block[self.ignore]
            bank_block[self.ignore] = IGNORED
            try:
                triplets = self.inner(scratch, anchor_labels, ref_labels, self_index, inplace=inplace)
            finally:
                if inplace:  # the criterion reads S_ap, S_an out of this very matrix afterwards
                    bank_block[self.ignore] = saved
        self.bank_negative = triplets.negative >= self.offset
        return triplets


def split_hn_ratio(points: Tensor, from_bank: Tensor) -> dict[str, Tensor]:
    """hn_ratio (share of triplets with S_an > S_ap) for in-batch and bank negatives apart."""
    stats = {"bank_negative": from_bank}  # [T], aligned with stats["points"], for figures
    if len(points):
        stats["bank_negative_share"] = from_bank.float().mean()
    hard = points[:, 1] > points[:, 0]
    for name, where in (("batch", ~from_bank), ("bank", from_bank)):
        if bool(where.any()):
            stats[f"hn_ratio_{name}"] = hard[where].float().mean()
    return stats


def global_batch(embeddings: Tensor, labels: Tensor, indices: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """All ranks' (embeddings, labels, dataset indices) in rank order, detached; this rank's
    own when not distributed. One collective (labels and indices ride along as columns)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return embeddings, labels, indices
    with torch.no_grad():
        packed = torch.cat([embeddings.double(), labels.double()[:, None], indices.double()[:, None]], dim=1)
        every = distributed.all_gather(packed).flatten(0, 1)
    return every[:, :-2].to(embeddings.dtype), every[:, -2].long(), every[:, -1].long()


def build_memory(cfg, model_dim: int, loss: nn.Module) -> CrossBatchMemory | None:
    """``memory=none`` -> None; otherwise the memory, checked against the loss."""
    from hydra.utils import instantiate

    if cfg is None or not cfg.get("_target_"):
        return None
    memory = instantiate(cfg, dim=model_dim) if "dim" not in cfg else instantiate(cfg)
    memory.check_loss(loss)
    return memory
