"""``last.ckpt`` that a run can be resumed from exactly, written often, atomically, and on a signal.

What Lightning's ``ModelCheckpoint`` does not do, and a run that lasts days needs:
- write ``<run_dir>/checkpoints/last.ckpt`` every ``every_n_train_steps`` optimiser steps, at
  every epoch end and when training ends, through a temporary file and ``os.replace``, so a
  kill while writing leaves the previous checkpoint intact instead of a truncated one;
- store what Lightning leaves out: where the class-balanced sampler is inside its epoch, the
  python/numpy/torch random states, and the run's config (``hardneg.resume`` refuses to
  continue with a config that would change the result);
- never overwrite a good checkpoint with non-finite weights;
- on SIGINT (Ctrl+C) or the signal a cluster sends before a preemption or time limit
  (SIGUSR1/SIGUSR2/SIGTERM), finish the running step, write ``last.ckpt`` and stop with
  ``RunInterrupted``; ``Run.execute`` then records the interruption and requeues on SLURM.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
import torch

from hardneg import resume

log = logging.getLogger("hardneg")
CHECKPOINT_DIR, LAST = "checkpoints", "last.ckpt"
# What a cluster sends before it stops a job: SLURM's --signal / submitit (USR1, USR2), and
# SLURM's own SIGTERM at a time limit or preemption.
CLUSTER_SIGNALS = ("SIGUSR1", "SIGUSR2", "SIGTERM")


class RunInterrupted(Exception):
    """Training was stopped by a signal after ``last.ckpt`` was written; it can be resumed."""

    def __init__(self, signum: int, checkpoint: Path | None, previous_handler=None):
        self.signum, self.checkpoint = signum, checkpoint
        self.previous_handler = previous_handler  # what handled the signal before the run (e.g. submitit)
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


class ResumableCheckpoint(L.Callback):
    def __init__(self, every_n_train_steps: int = 50, save_on_signal: bool = True):
        if every_n_train_steps < 0:
            raise ValueError(
                f"callbacks.checkpoint.every_n_train_steps must be >= 0 (0: only at epoch ends), "
                f"got {every_n_train_steps}"
            )
        self.every_n_train_steps, self.save_on_signal = every_n_train_steps, save_on_signal
        self.run_config: dict | None = None  # set by build_run; stored for hardneg.resume's check
        self._saved_step: int | None = None
        self._pending_signal: int | None = None
        self._previous_handlers: dict[int, Any] = {}
        self._rng_after_start: dict | None = None
        self._logging_step: int | None = None
        self._interrupted: RunInterrupted | None = None  # saved on a signal, raised at the next batch

    @staticmethod
    def path(run_dir: Path) -> Path:
        return Path(run_dir) / CHECKPOINT_DIR / LAST

    # -- writing ----------------------------------------------------------------------------
    def save(self, trainer: L.Trainer, pl_module) -> Path | None:
        """Write last.ckpt (on every rank's call; rank 0 writes) unless the weights are non-finite."""
        if self._saved_step == trainer.global_step and self.path(trainer.default_root_dir).exists():
            return self.path(trainer.default_root_dir)
        bad = [name for name, p in pl_module.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            log.warning(
                "not writing %s: %d parameter tensor(s) hold NaN/inf (first: %s); the previous checkpoint "
                "is kept", self.path(trainer.default_root_dir), len(bad), bad[0],
            )
            return None
        path = self.path(trainer.default_root_dir)
        tmp = path.with_name(f".{path.name}.tmp")
        trainer.save_checkpoint(tmp, weights_only=False)  # full state: optimiser, callbacks, loops
        if trainer.is_global_zero:
            os.replace(tmp, path)  # atomic: a reader sees the old or the new file, never half of one
        trainer.strategy.barrier("hardneg_checkpoint")
        self._saved_step = trainer.global_step
        return path

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[resume.CHECKPOINT_KEY] = {
            "config": self.run_config,
            "sampler": resume.sampler_position(trainer),
            "rng": resume.rng_state(),
        }

    def _signal_on_any_rank(self, trainer: L.Trainer, pl_module) -> int | None:
        """The pending signal, agreed by all ranks (they may receive it a step apart)."""
        signum = self._pending_signal or 0
        if trainer.world_size > 1:
            flag = torch.tensor(signum, device=pl_module.device)
            signum = int(trainer.strategy.reduce(flag, reduce_op="max"))
        return signum or None

    def _save_if_signalled(self, trainer: L.Trainer, pl_module) -> RunInterrupted | None:
        signum = self._signal_on_any_rank(trainer, pl_module) if self.save_on_signal else None
        if signum is None:
            return None
        self._pending_signal = None
        return RunInterrupted(signum, self.save(trainer, pl_module), self._previous_handlers.get(signum))

    @property
    def interrupted(self) -> RunInterrupted | None:
        """A stop that was saved for but not raised yet (see Run.execute)."""
        return self._interrupted

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int) -> None:
        self._continue_logging_steps(trainer)
        if self._interrupted is not None:  # raised here, once Lightning has logged the saved step
            stop, self._interrupted = self._interrupted, None
            raise stop

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        # After an epoch's last batch the epoch's evaluation still has to run: a checkpoint
        # written here would resume into the next epoch without it. on_train_epoch_end saves.
        if batch_idx + 1 >= trainer.num_training_batches:
            return
        self._interrupted = self._save_if_signalled(trainer, pl_module)
        if self._interrupted is not None:
            return
        n = self.every_n_train_steps
        if n and trainer.global_step > 0 and trainer.global_step % n == 0:
            self.save(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        # Lightning evaluates at an epoch's end before this hook: the checkpoint includes it.
        stop = self._save_if_signalled(trainer, pl_module)
        if stop is not None:
            raise stop
        self.save(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        self.save(trainer, pl_module)

    # -- resuming ---------------------------------------------------------------------------
    def on_load_checkpoint(self, trainer: L.Trainer, pl_module, checkpoint: dict) -> None:
        state = checkpoint.get(resume.CHECKPOINT_KEY) or {}
        position = state.get("sampler")
        if position is not None and trainer.datamodule is not None:
            trainer.datamodule.resume_position = position  # applied when the train loader is built
        if state.get("rng") is not None:
            # Restored now, before Lightning starts the loader (which draws a seed from torch's
            # generator, as the uninterrupted run did at the start of the epoch) ...
            resume.set_rng_state(state["rng"])
            # ... and again once training starts when the checkpoint is mid-epoch: there the
            # uninterrupted run drew that seed before the checkpoint, not after it.
            self._rng_after_start = state["rng"] if position and position["batches_done"] else None
        self._saved_step = checkpoint.get("global_step")
        self._logging_step = checkpoint.get("global_step")

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        if self._rng_after_start is not None:
            resume.set_rng_state(self._rng_after_start)
            self._rng_after_start = None

    def _continue_logging_steps(self, trainer: L.Trainer) -> None:
        if self._logging_step is not None:
            # Lightning guesses the logging step on restart (+1 for a checkpoint written at a
            # batch end, which is wrong for one written at an epoch end); the CSV/W&B step axis
            # must continue exactly: it counts optimiser steps, as global_step does.
            trainer.fit_loop.epoch_loop._batches_that_stepped = self._logging_step
            self._logging_step = None

    # -- signals ----------------------------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module) -> None:
        if not self.save_on_signal or threading.current_thread() is not threading.main_thread():
            return
        for name in ("SIGINT", *CLUSTER_SIGNALS):
            signum = getattr(signal, name, None)
            if signum is not None:
                self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame) -> None:
        if self._pending_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl+C: stop now, without a checkpoint
        self._pending_signal = signum
        log.warning(
            "%s received: finishing the current step, writing %s, then stopping (Ctrl+C again to stop at once)",
            signal.Signals(signum).name, CHECKPOINT_DIR + "/" + LAST,
        )

    def restore_signal_handlers(self) -> None:
        """Put back the handlers from before ``fit``. Called by ``Run`` after ``fit`` returns:
        Lightning's own teardown re-installs the handlers it found when fit started (ours)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous_handlers = {}
