"""Continue a run from its checkpoint: which checkpoint, whether its config allows it, and the
pieces of state Lightning does not keep (sampler position, random generators).

``resume=auto`` (default) continues from ``<run_dir>/checkpoints/last.ckpt`` when it exists,
``resume=never`` starts afresh, ``resume=<path.ckpt>`` continues from that file. A checkpoint
whose saved config differs from this run's in a key that changes the result is refused before
any data is read: the resumed run would be neither the old run nor the new one.
"""
from __future__ import annotations

import random
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from hardneg.errors import ConfigError

CHECKPOINT_KEY = "hardneg"  # our part of a Lightning checkpoint
# Keys that may differ between a run and its continuation: where things are written, how
# they are shown (callbacks other than the collapse detector only observe), how long to
# train, and how fast (neither changes the numbers).
RESULT_CHANGING = ("callbacks.collapse",)
RESULT_NEUTRAL = (
    "resume", "paths", "logger", "hydra", "optimized_metric", "callbacks",
    "trainer.max_epochs", "trainer.max_steps", "trainer.enable_progress_bar", "trainer.enable_model_summary",
    "trainer.log_every_n_steps", "data.num_workers", "data.eval_batch_size", "eval.backend",
)


def checkpoint_to_resume(cfg: DictConfig, run_dir: Path) -> Path | None:
    """The checkpoint this run continues from, or None to start afresh."""
    choice = str(cfg.get("resume", "auto"))
    if choice == "never":
        return None
    if choice == "auto":
        last = run_dir / "checkpoints" / "last.ckpt"
        return last if last.exists() else None
    path = Path(choice).expanduser()
    if path.suffix != ".ckpt" or not path.is_file():
        raise ConfigError(
            f"resume={choice!r}: expected auto, never or the path of an existing .ckpt file "
            f"(e.g. resume={run_dir / 'checkpoints' / 'last.ckpt'})"
        )
    return path


def load_saved_state(path: Path) -> dict:
    """Our part of a checkpoint, read without loading the weights (memory-mapped, no code run)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # a truncated or foreign file: say which and what to do
        raise ConfigError(f"cannot read checkpoint {path} ({err}); pass resume=never to start afresh") from err
    state = dict(checkpoint.get(CHECKPOINT_KEY) or {})
    state["global_step"] = checkpoint.get("global_step", 0)
    state["epoch"] = checkpoint.get("epoch", 0)
    return state


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == k or key.startswith(k + ".") for k in prefixes)


def _neutral(key: str) -> bool:
    return _under(key, RESULT_NEUTRAL) and not _under(key, RESULT_CHANGING)


def config_differences(saved: dict, current: dict) -> list[tuple[str, Any, Any]]:
    """(key, saved value, current value) for every result-changing key that differs."""
    old, new = _flatten(saved), _flatten(current)
    missing = object()
    diffs = []
    for key in sorted(set(old) | set(new)):
        if _neutral(key):
            continue
        a, b = old.get(key, missing), new.get(key, missing)
        if a != b:
            diffs.append((key, "<absent>" if a is missing else a, "<absent>" if b is missing else b))
    return diffs


def check_config(cfg: DictConfig, path: Path, state: dict) -> None:
    saved = state.get("config")
    if saved is None:
        return  # a checkpoint from before configs were stored: nothing to compare
    current = OmegaConf.to_container(cfg, resolve=True)
    diffs = config_differences(saved, current)
    if diffs:
        lines = "\n".join(f"  {key}: checkpoint {a!r}, now {b!r}" for key, a, b in diffs[:20])
        more = f"\n  ... and {len(diffs) - 20} more" if len(diffs) > 20 else ""
        raise ConfigError(
            f"cannot resume from {path}: its run used a different config in keys that change the result:\n"
            f"{lines}{more}\nUse the original values to continue that run, or resume=never (or another "
            "run directory) to start a new one."
        )


def continue_command(run_dir: Path) -> str:
    """The command line that continues this run (resume=auto in the same run directory)."""
    args = [a for a in sys.argv[1:] if not a.startswith(("resume=", "+resume="))]
    if not any(a.startswith(("paths.output_dir=", "hydra.run.dir=")) for a in args):
        args.append(f"hydra.run.dir={run_dir}")  # the run directory Hydra picked by the time
    return shlex.join(["python", "-m", "hardneg.run", *args])


# -- state Lightning does not keep ------------------------------------------------------------
def sampler_position(trainer) -> dict[str, int]:
    """The epoch and the number of its batches already trained when a checkpoint is written.

    A checkpoint written after an epoch's last batch (or at its end) continues with the next
    epoch from its first batch, as Lightning's loop does.
    """
    epoch = trainer.current_epoch
    done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
    if done >= trainer.num_training_batches:
        epoch, done = epoch + 1, 0
    return {"epoch": int(epoch), "batches_done": int(done)}


def rng_state() -> dict:
    """Python, numpy and torch generator states in types ``torch.load(weights_only=True)`` reads."""
    version, state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    out = {
        "python": [version, list(state), gauss],
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict) -> None:
    version, values, gauss = state["python"]
    random.setstate((version, tuple(values), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
