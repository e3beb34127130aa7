"""Sending figures and scalars to whatever loggers the run has (W&B, CSV, none).

Callbacks cannot ``self.log`` from ``on_validation_end`` (where the gathered test embeddings
are available), so they write to the loggers directly, at the current global step.
"""
from __future__ import annotations

from pathlib import Path

import lightning as L


def log_scalars(trainer: L.Trainer, metrics: dict[str, float]) -> None:
    if not trainer.is_global_zero:
        return
    for logger in trainer.loggers:
        logger.log_metrics(dict(metrics), step=trainer.global_step)


def log_images(trainer: L.Trainer, images: dict[str, str | Path]) -> None:
    """Loggers with image support (W&B) get each PNG under its key; the others are skipped
    (the PNGs are in the run directory anyway)."""
    if not trainer.is_global_zero:
        return
    for logger in trainer.loggers:
        if hasattr(logger, "log_image"):
            for key, path in images.items():
                logger.log_image(key=key, images=[str(path)], step=trainer.global_step)


def describe_loss(pl_module) -> str:
    loss = pl_module.criterion.loss
    extra = loss.extra_repr() if hasattr(loss, "extra_repr") else ""
    return f"{type(loss).__name__}({extra})"


def describe_mining(pl_module) -> str:
    miner = pl_module.criterion.miner
    pos, neg = getattr(miner, "pos", "?"), getattr(miner, "neg", "?")
    return f"{pos} positive / {neg} negative"


def sct_threshold(pl_module, default: float) -> float:
    """The run's SCT threshold when the loss has one, else the official default (for drawing)."""
    value = getattr(pl_module.criterion.loss, "threshold", None)
    return float(value) if isinstance(value, (int, float)) else default
