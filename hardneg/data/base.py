"""The shared base of every retrieval datamodule.

A subclass only says how to read its dataset (``build_splits``); batching, the
class-balanced sampler, DDP sharding and the feature-cache fast path live here.

Dataset items are ``(input, label, index)``: ``index`` is the item's position in its split,
so evaluation can drop the duplicates that distributed padding adds.
"""
from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from hardneg.data.samplers import ClassBalancedBatchSampler

PROTOCOLS = ("loo", "query_gallery")


@dataclass
class RetrievalSplits:
    """``train`` and the evaluation set ``test``; both expose ``.labels`` (LongTensor).

    For query-vs-gallery protocols ``test`` also exposes ``.is_query`` (BoolTensor).
    """

    train: Dataset
    test: Dataset


class TensorRetrievalDataset(Dataset):
    """Items from in-memory tensors; optional per-item transform (used for glyphs and features)."""

    def __init__(self, inputs: Tensor, labels: Tensor, transform=None, is_query: Tensor | None = None):
        if len(inputs) != len(labels):
            raise ValueError(f"{len(inputs)} inputs but {len(labels)} labels")
        self.inputs, self.labels, self.transform = inputs, torch.as_tensor(labels).long(), transform
        self.is_query = is_query

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = self.inputs[i]
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[i]), i


class RetrievalDataModule(L.LightningDataModule):
    """Class-disjoint retrieval data: train on some classes, retrieve among unseen ones."""

    name = "base"
    protocol = "loo"  # leave-one-out over ``test``; "query_gallery" uses ``test.is_query``

    def __init__(
        self,
        batch_size: int = 64,
        samples_per_class: int = 2,
        sampler: str = "filled",
        repeat: int = 1,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        seed: int = 0,
        recall_ks: tuple[int, ...] = (1, 2, 4, 8),
    ):
        super().__init__()
        self.batch_size, self.samples_per_class = batch_size, samples_per_class
        self.sampler, self.repeat = sampler, repeat
        self.eval_batch_size, self.num_workers, self.seed = eval_batch_size, num_workers, seed
        self.recall_ks = tuple(recall_ks)
        self.splits: RetrievalSplits | None = None
        self.image_splits: RetrievalSplits | None = None  # set when splits hold features
        self.resume_position: dict | None = None  # {"epoch", "batches_done"} from a checkpoint (hardneg.resume)

    # -- what subclasses provide -------------------------------------------------------
    def build_splits(self) -> RetrievalSplits:
        raise NotImplementedError

    def fingerprint(self) -> str:
        """A string that changes whenever the evaluation-transformed images would change."""
        raise NotImplementedError

    # -- Lightning hooks -----------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.splits is None:
            self.splits = self.build_splits()

    def use_features(self, train: Tensor, test: Tensor) -> None:
        """Swap images for precomputed backbone features (the frozen-backbone fast path)."""
        self.setup()
        self.image_splits = self.splits  # kept for figures that show images (retrieval examples)
        is_query = getattr(self.splits.test, "is_query", None)
        self.splits = RetrievalSplits(
            TensorRetrievalDataset(train, self.splits.train.labels),
            TensorRetrievalDataset(test, self.splits.test.labels, is_query=is_query),
        )

    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    def train_dataloader(self) -> DataLoader:
        self.setup()
        world, rank = self._world()
        batch_sampler = ClassBalancedBatchSampler(
            self.splits.train.labels,
            batch_size=self.batch_size,
            samples_per_class=self.samples_per_class,
            mode=self.sampler,
            repeat=self.repeat,
            num_replicas=world,
            rank=rank,
            seed=self.seed,
        )
        if self.resume_position is not None:  # set before Lightning first iterates the loader
            batch_sampler.resume_at(**self.resume_position)
            self.resume_position = None
        return DataLoader(
            self.splits.train, batch_sampler=batch_sampler, num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def _eval_dataloader(self) -> DataLoader:
        self.setup()
        world, rank = self._world()
        # Distributed padding repeats a few items; the metric de-duplicates by index.
        sampler = DistributedSampler(self.splits.test, world, rank, shuffle=False) if world > 1 else None
        return DataLoader(
            self.splits.test, batch_size=self.eval_batch_size, sampler=sampler, shuffle=False,
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_dataloader()

    def test_dataloader(self) -> DataLoader:
        return self._eval_dataloader()
