"""Frozen-backbone fast path: compute backbone features once, train only the head.

With a frozen backbone the features of the (un-augmented) images never change, so they are
computed once per (dataset, image size, backbone, weights) and cached on disk; thousands of
head-only steps then take seconds on a CPU. Augmentation is lost on this path; use
``model.cache_features=false`` (or an unfrozen backbone) to keep it.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from hardneg.models.embedding import EmbeddingNet

log = logging.getLogger(__name__)


@torch.no_grad()
def backbone_features(backbone: torch.nn.Module, dataset: Dataset, batch_size: int = 128, num_workers: int = 0) -> Tensor:
    """Pooled backbone features of every item of ``dataset``, in order, as float32 [N, F]."""
    was_training = backbone.training
    backbone.eval()
    out = []
    for x, _, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers):
        out.append(backbone(x).float())
    backbone.train(was_training)
    return torch.cat(out)


def weights_fingerprint(module: torch.nn.Module) -> str:
    """A short hash of a module's parameters (distinguishes random inits and checkpoints)."""
    h = hashlib.sha1()
    for name, p in module.state_dict().items():
        h.update(name.encode())
        h.update(p.detach().flatten()[:256].cpu().float().numpy().tobytes())
    return h.hexdigest()[:12]


def deterministic_view(datamodule) -> Dataset:
    """The training images under the *evaluation* transform: caching one random crop and
    flip of every image would freeze that augmentation for the whole run."""
    train = datamodule.splits.train
    eval_transform = getattr(datamodule, "eval_transform", None)
    if eval_transform is not None and hasattr(train, "with_transform"):
        return train.with_transform(eval_transform)
    return train


def cache_key(net: EmbeddingNet, datamodule) -> str:
    return f"{datamodule.fingerprint()}-{net.backbone_name}-{weights_fingerprint(net.backbone)}"


def cached_backbone_features(net: EmbeddingNet, datamodule, cache_dir: str | os.PathLike) -> tuple[Tensor, Tensor]:
    """(train, test) features, loaded from ``cache_dir`` or computed and saved there."""
    datamodule.setup()
    path = Path(cache_dir).expanduser() / "features" / f"{cache_key(net, datamodule)}.pt"
    if path.exists():
        log.info("backbone features from cache %s", path)
        cached = torch.load(path, map_location="cpu", weights_only=True)
        return cached["train"], cached["test"]
    log.info("computing backbone features once (cached at %s)", path)
    workers = getattr(datamodule, "num_workers", 0)
    train = backbone_features(net.backbone, deterministic_view(datamodule), datamodule.eval_batch_size, workers)
    test = backbone_features(net.backbone, datamodule.splits.test, datamodule.eval_batch_size, workers)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"train": train, "test": test}, tmp)
    tmp.replace(path)  # atomic: concurrent runs never read half a file
    return train, test
