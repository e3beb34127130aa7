"""Class-balanced batch samplers (P classes x K images), as in the official code, DDP-aware.

A *global* batch is P groups of K images of one class each. Under DDP the global batch is
cut into whole groups, ``P / world_size`` groups per rank, so every rank holds complete
classes (no anchor loses its positives), no sample appears twice in one global batch, and
every rank runs the same number of steps. The order is re-drawn every epoch from
``seed + epoch`` so all ranks agree without communicating.

Modes (docs/method.md, "The official training recipe"):
- ``filled`` (CUB, Cars): every class padded with replacement or cut to the largest class
  size, classes shuffled, and their K-groups interleaved; one pass is one epoch.
- ``sampled`` (SOP, In-Shop, Hotels): each of ``repeat`` rounds draws K random images of
  every class, classes shuffled, cut into whole batches (the round's last partial batch is
  dropped, so no batch spans two rounds).
Classes with fewer than K images are left out of training (they stay in evaluation).
Unlike the official code, padding never puts the same image twice into one group: the
official sampler could pair an image with itself, which its miner then had to skip.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Sampler

MODES = ("filled", "sampled")


class ClassBalancedBatchSampler(Sampler[list[int]]):
    def __init__(
        self,
        labels,
        batch_size: int,
        samples_per_class: int = 2,
        mode: str = "filled",
        repeat: int = 1,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
    ):
        if mode not in MODES:
            raise ValueError(f"data.sampler={mode!r} is unknown; choose one of {list(MODES)}")
        k = samples_per_class
        if k < 2:
            raise ValueError(f"data.samples_per_class must be >= 2 to form positive pairs, got {k}")
        if batch_size % k:
            raise ValueError(f"data.batch_size={batch_size} must be a multiple of data.samples_per_class={k}")
        groups = batch_size // k
        if groups % num_replicas:
            raise ValueError(
                f"data.batch_size={batch_size} holds {groups} classes, which cannot be split evenly "
                f"over {num_replicas} processes; use a batch size that is a multiple of {k * num_replicas}"
            )
        labels = np.asarray(torch.as_tensor(labels).cpu(), dtype=np.int64)
        by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
        self.classes = [idx for idx in by_class if len(idx) >= k]
        self.dropped_classes = len(by_class) - len(self.classes)
        self.dropped_images = sum(len(idx) for idx in by_class if len(idx) < k)
        if len(self.classes) < 2:
            raise ValueError(
                f"training needs at least 2 classes with {k}+ images (data.samples_per_class); "
                f"found {len(self.classes)}"
            )
        if groups > len(self.classes):
            raise ValueError(
                f"data.batch_size={batch_size} asks for {groups} classes per batch but the training split "
                f"has only {len(self.classes)} usable classes; lower data.batch_size"
            )
        self.k, self.groups, self.mode, self.repeat = k, groups, mode, repeat
        self.num_replicas, self.rank, self.seed, self.epoch = num_replicas, rank, seed, 0
        self._skip = 0  # batches of ``self.epoch`` already trained before a resume (resume_at)
        # Lightning calls set_epoch on ``dataloader.batch_sampler.sampler``, never on the batch
        # sampler itself: without this every epoch would replay epoch 0's batches.
        self.sampler = _EpochForwarder(self)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self._skip = 0  # a pending resume position belongs to the epoch it was set for
        self.epoch = epoch

    def resume_at(self, epoch: int, batches_done: int) -> None:
        """Continue ``epoch`` after its first ``batches_done`` batches, as an uninterrupted run would.

        Lightning restores its batch counter on resume but re-creates the loader from the start of
        the epoch (it only resumes loaders that are themselves stateful), so without this a run
        resumed mid-epoch would train on the epoch's first batches twice and never see its last.
        The next ``__iter__`` skips them; later epochs start from their first batch.
        """
        if batches_done < 0 or batches_done > len(self):
            raise ValueError(f"cannot resume at batch {batches_done} of an epoch of {len(self)} batches")
        self.epoch, self._skip = epoch, batches_done

    def _group_order(self, rng: np.random.Generator) -> np.ndarray:
        """All K-groups of the epoch, [num_groups, K], in the order batches take them."""
        k = self.k
        if self.mode == "filled":
            num_groups = max(len(c) for c in self.classes) // k
            per_class = [_distinct_groups(idx, num_groups, k, rng) for idx in self.classes]
            per_class = [per_class[i] for i in rng.permutation(len(per_class))]
            # [C, G, K] -> [G, C, K]: the j-th group of every class, then the next j.
            return np.stack(per_class).transpose(1, 0, 2).reshape(-1, k)
        rounds = []
        for _ in range(self.repeat):
            order = rng.permutation(len(self.classes))
            # Cut each round into whole batches: a batch spanning two rounds could hold one
            # class (even one image) twice. The round's remainder classes are dropped.
            order = order[: len(order) // self.groups * self.groups]
            rounds.append(np.stack([rng.choice(self.classes[c], k, replace=False) for c in order]))
        return np.concatenate(rounds)

    def _global_batches(self) -> np.ndarray:
        rng = np.random.default_rng(self.seed + self.epoch)
        groups = self._group_order(rng)
        n = len(groups) // self.groups  # incomplete batches are dropped
        return groups[: n * self.groups].reshape(n, self.groups, self.k)

    def __iter__(self):
        per_rank = self.groups // self.num_replicas
        lo = self.rank * per_rank
        batches, self._skip = self._global_batches()[self._skip :], 0
        for batch in batches:
            yield batch[lo : lo + per_rank].reshape(-1).tolist()

    def __len__(self) -> int:
        if self.mode == "filled":
            length = max(len(c) for c in self.classes) // self.k
            total = length * len(self.classes)
            return total // self.groups
        return self.repeat * (len(self.classes) // self.groups)


class _EpochForwarder:
    """Stands where Lightning looks for a batch sampler's inner sampler; forwards ``set_epoch``."""

    def __init__(self, owner: ClassBalancedBatchSampler):
        self.owner = owner

    def set_epoch(self, epoch: int) -> None:
        self.owner.set_epoch(epoch)


def _distinct_groups(idx: np.ndarray, num_groups: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """``num_groups`` groups of ``k`` distinct images of one class, [num_groups, k].

    Images are taken from successive random permutations, so a class larger than needed is
    cut and a smaller one is padded with every image used about equally often.
    """
    groups, pool = [], []
    for _ in range(num_groups):
        if len(pool) < k:
            pool = pool + [i for i in rng.permutation(idx).tolist() if i not in pool]
        groups.append(pool[:k])
        pool = pool[k:]
    return np.asarray(groups, dtype=np.int64)
