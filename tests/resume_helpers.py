"""A callback the resume tests add from the command line (``+callbacks.pause=...``): it holds a
training process at a known step so that a test can signal or kill it there, not at a random
moment."""
from __future__ import annotations

import time
from pathlib import Path

import lightning as L


class PauseAt(L.Callback):
    """At the end of optimiser step ``step``: touch ``marker`` and sleep ``seconds``."""

    def __init__(self, step: int, marker: str, seconds: float = 60.0):
        self.step, self.marker, self.seconds = step, Path(marker), seconds

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step != self.step:
            return
        self.marker.touch()
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline and not _signal_pending(trainer):
            time.sleep(0.05)


def _signal_pending(trainer: L.Trainer) -> bool:
    return any(getattr(callback, "_pending_signal", None) for callback in trainer.callbacks)
