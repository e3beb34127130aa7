"""Entry point: ``python -m hardneg.run [overrides]``; ``train(cfg)`` is the plain function behind it."""
from __future__ import annotations

import logging
import sys
import tempfile
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

from hardneg.config import config_dir
from hardneg.errors import UserError

log = logging.getLogger("hardneg")


def resolve_run_dir(cfg: DictConfig) -> Path:
    """The run's output directory: ``paths.output_dir``, else Hydra's, else ``outputs/<time>``."""
    if cfg.paths.get("output_dir"):
        path = Path(cfg.paths.output_dir)
    else:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            path = Path(HydraConfig.get().runtime.output_dir)
        else:
            path = Path("outputs") / time.strftime("%Y-%m-%d/%H-%M-%S")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):  # mkdir succeeds on an existing read-only dir
            pass
    except OSError as err:
        raise UserError(
            f"cannot write the run directory {path} ({err.strerror or err}). Point paths.output_dir "
            "(or hydra.run.dir) at a writable directory, or fix its permissions"
        ) from None
    return path


def quiet_libraries() -> None:
    """Lightning logs through its own handler *and* Hydra's root one: keep one copy, drop
    its marketing tip and a deprecation warning of its own internals."""
    import warnings

    logging.getLogger("lightning.pytorch").propagate = False
    logging.getLogger("lightning.fabric").propagate = False
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    # A frozen backbone is in eval mode on purpose (models/embedding.py).
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
    # The class-balanced sampler resumes mid-epoch itself (hardneg.resume, data/samplers.py).
    warnings.filterwarnings("ignore", message=".*your dataloader is not resumable.*")
    # test/* metrics are computed on the gathered embeddings: already global, no sync needed.
    warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: "litlogger" not in record.getMessage()
    )


def train(cfg: DictConfig) -> dict:
    """Train and evaluate as ``cfg`` says; return the metrics before and after training.

    Returns ``{"status": "completed"|"stopped", "initial": {...}, "final": {...}, "history":
    [(epoch, {...})], "run_dir": str, "skipped_steps": int, "resumes": [...], "summary": {...},
    "train": {...last step's stats}}``. With ``resume=auto`` (default) a run directory holding
    ``checkpoints/last.ckpt`` is continued from it (hardneg/resume.py); a signal stops the run
    with ``RunInterrupted`` after writing that checkpoint (hardneg/callbacks/checkpoint.py).
    """
    from hardneg.validate import validate

    validate(cfg)  # cheap, and before anything is read or built (the CLI already ran it once)
    from hardneg.builders import build_run  # heavy imports (torch, lightning) only when training

    run = build_run(cfg, resolve_run_dir(cfg))
    return run.execute()


def _report_error(err: BaseException) -> None:
    from rich.console import Console

    Console(stderr=True, soft_wrap=True).print(f"[bold red]hardneg: error:[/] {err}", markup=True, highlight=False)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def main(cfg: DictConfig) -> float | None:
    quiet_libraries()
    try:
        result = train(cfg)
    except UserError as err:
        _report_error(err)
        sys.exit(2)
    except Exception as err:
        if type(err).__name__ == "RunInterrupted":  # signal -> last.ckpt written (callbacks/checkpoint.py)
            sys.exit(_after_interruption(err, cfg))
        from hydra.errors import InstantiationException

        if isinstance(err, InstantiationException):  # wraps our ValueErrors; print the message
            _report_error(err)
            sys.exit(2)
        raise
    # The returned value is what Hydra sweepers optimise.
    return result["final"].get(cfg.get("optimized_metric", "recall@1"))


def _after_interruption(stop, cfg: DictConfig) -> int:
    """Say how to continue; on a cluster's signal under SLURM, requeue the job. The exit code."""
    import os
    import signal
    import subprocess

    from hardneg.resume import continue_command

    name = signal.Signals(stop.signum).name
    saved = f"checkpoint written: {stop.checkpoint}" if stop.checkpoint else "no checkpoint could be written"
    print(f"hardneg: {name} received; {saved}.\nContinue with:\n  {continue_command(resolve_run_dir(cfg))}",
          file=sys.stderr)
    if stop.signum == signal.SIGINT:
        return 128 + stop.signum
    previous = stop.previous_handler
    if callable(previous):  # e.g. submitit's handler: it checkpoints its job and requeues it
        previous(stop.signum, None)
    elif os.environ.get("SLURM_JOB_ID"):
        job = os.environ["SLURM_JOB_ID"]
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
        if done.returncode == 0:
            print(f"hardneg: requeued SLURM job {job}; it continues from the checkpoint", file=sys.stderr)
        else:
            print(f"hardneg: `scontrol requeue {job}` failed: {done.stderr.strip()}", file=sys.stderr)
    return 128 + stop.signum


def cli() -> None:
    """``python -m hardneg.run`` / ``hardneg-run``: typos in override keys and group options get
    a "did you mean" and exit code 2 before Hydra starts; the rest is Hydra's ``main``."""
    from hardneg.validate_cli import check_command_line

    check_command_line(sys.argv[1:])
    main()


if __name__ == "__main__":
    cli()
