"""Shared fixtures: the real Hydra config, composed and shrunk for fast CPU tests."""
from __future__ import annotations

import os

# Never reach for a network from tests: timm's hub retries for ~47 s, W&B would try to log in.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))

# A shrunk run: few glyph classes, one short epoch, a tiny random network, no logger.
FAST_OVERRIDES = [
    "model=tiny",
    "data.max_classes=12",
    "data.image_size=32",
    "data.batch_size=12",
    "data.images_per_font=1",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "logger=none",
    "callbacks.progress_bar=null",
]


@pytest.fixture
def make_cfg(tmp_path):
    """``make_cfg(["loss=nca", ...])`` -> the composed config with FAST_OVERRIDES first."""
    from hardneg.config import compose

    def _make(overrides=(), fast=True, config_name="config"):
        base = FAST_OVERRIDES if fast else []
        paths = [f"paths.output_dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}"]
        return compose([*base, *paths, *overrides], config_name=config_name)

    return _make


# Tests on tiny tensors run with one intra-op thread: on a busy 2-core machine every parallel
# region can wait milliseconds for the second core, which made them ~10x slower.
TINY_TENSOR_TESTS = ("losses", "mining", "test_criterion.py")


@pytest.fixture(autouse=True)
def _one_thread_for_tiny_tensors(request):
    if not any(part in TINY_TENSOR_TESTS for part in request.path.relative_to(request.config.rootpath).parts):
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
