"""The shared base of every retrieval datamodule.

A subclass only says how to read its dataset (``build_splits``); batching, the
class-balanced sampler, DDP sharding and the feature-cache fast path live here.

Dataset items are ``(input, label, index)``: ``index`` is the item's position in its split,
so evaluation can drop the duplicates that distributed padding adds.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from hardneg.data.samplers import ClassBalancedBatchSampler
from hardneg.errors import ConfigError

PROTOCOLS = ("loo", "query_gallery")
log = logging.getLogger(__name__)


@dataclass
class RetrievalSplits:
    """``train`` and the evaluation set ``test``; both expose ``.labels`` (LongTensor).

    For query-vs-gallery protocols ``test`` also exposes ``.is_query`` (BoolTensor).
    """

    train: Dataset
    test: Dataset


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # respects taskset / SLURM's --cpus-per-task
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_num_workers(value: int | str, local_ranks: int | None = None) -> int:
    """``auto``: one worker per usable CPU core of this process's share, keeping one for the main
    process, at most 16; the share divides the cores among the processes (GPUs) of this node:
    ``local_ranks`` (the trainer's devices, once known), else LOCAL_WORLD_SIZE or
    SLURM_NTASKS_PER_NODE as DDP launchers set them. An int is taken as is."""
    if value == "auto":
        ranks = local_ranks or int(os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("SLURM_NTASKS_PER_NODE") or 1)
        return max(0, min(16, usable_cpus() // max(1, ranks) - 1))
    try:
        workers = int(value)
    except (TypeError, ValueError):
        workers = -1
    if workers < 0 or isinstance(value, bool):
        raise ConfigError(f"data.num_workers={value!r} must be a number >= 0 or auto")
    return workers


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
        num_workers: int | str = 0,
        seed: int = 0,
        recall_ks: tuple[int, ...] = (1, 2, 4, 8),
        pin_memory: bool | str = "auto",
        persistent_workers: bool = True,
        prefetch_factor: int | None = None,
    ):
        super().__init__()
        self.batch_size, self.samples_per_class = batch_size, samples_per_class
        self.sampler, self.repeat = sampler, repeat
        self.eval_batch_size, self.seed = eval_batch_size, seed
        self.workers_setting = num_workers
        self.num_workers = resolve_num_workers(num_workers)  # re-resolved once a trainer says its devices
        if pin_memory not in ("auto", True, False):
            raise ConfigError(f"data.pin_memory={pin_memory!r} is unknown; choose auto, true or false")
        self.pin_memory = torch.cuda.is_available() if pin_memory == "auto" else pin_memory
        self.persistent_workers, self.prefetch_factor = bool(persistent_workers), prefetch_factor
        self.recall_ks = tuple(recall_ks)
        self.splits: RetrievalSplits | None = None
        self.image_splits: RetrievalSplits | None = None  # set when splits hold features
        self._reported_dropped = False
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

    def corrupt_image_count(self) -> int:
        """Distinct images replaced by grey substitutes so far, over both splits and all workers
        (for results.json); 0 for in-memory datasets."""
        paths: set[str] = set()
        for splits in (self.splits, self.image_splits):
            for dataset in (splits.train, splits.test) if splits is not None else ():
                if hasattr(dataset, "corrupt_paths"):
                    paths.update(dataset.corrupt_paths())
        return len(paths)

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
        self._report_dropped(batch_sampler)
        return DataLoader(self.loader_dataset(self.splits.train), batch_sampler=batch_sampler, **self._loader_options())

    def _report_dropped(self, sampler: ClassBalancedBatchSampler) -> None:
        """Say once, by count, how many training classes are too small for a K-group (they stay in
        evaluation); the sampler is rebuilt on every train_dataloader call, the message is not."""
        if sampler.dropped_classes and not self._reported_dropped:
            total = sampler.dropped_classes + len(sampler.classes)
            log.warning(
                "%s: %d of %d training classes have fewer than data.samples_per_class=%d images and are left "
                "out of training (%d images); they stay in evaluation",
                self.name, sampler.dropped_classes, total, sampler.k, sampler.dropped_images,
            )
        self._reported_dropped = True

    def _eval_dataloader(self) -> DataLoader:
        self.setup()
        world, rank = self._world()
        # Distributed padding repeats a few items; the metric de-duplicates by index.
        sampler = DistributedSampler(self.splits.test, world, rank, shuffle=False) if world > 1 else None
        return DataLoader(
            self.loader_dataset(self.splits.test), batch_size=self.eval_batch_size, sampler=sampler, shuffle=False,
            **self._loader_options(),
        )

    def loader_dataset(self, dataset: Dataset) -> Dataset:
        """The dataset this datamodule's own loaders read (a subclass may hand out a cheaper view)."""
        return dataset

    def _loader_options(self) -> dict:
        """Workers, pinning and prefetch for every loader of this datamodule (data.num_workers, ...)."""
        trainer = getattr(self, "trainer", None)
        if self.workers_setting == "auto" and trainer is not None:
            self.num_workers = resolve_num_workers("auto", getattr(trainer, "num_devices", None))
        options = dict(num_workers=self.num_workers, pin_memory=self.pin_memory)
        if self.num_workers > 0:
            options["persistent_workers"] = self.persistent_workers
            if self.prefetch_factor is not None:
                options["prefetch_factor"] = int(self.prefetch_factor)
        return options

    def val_dataloader(self) -> DataLoader:
        return self._eval_dataloader()

    def test_dataloader(self) -> DataLoader:
        return self._eval_dataloader()
