"""Experiment loggers: W&B (online when logged in, otherwise offline, never a prompt), CSV, none."""
from __future__ import annotations

import csv
import logging
import netrc
import os
import uuid
import warnings
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from hardneg.errors import ConfigError

log = logging.getLogger(__name__)
LOGGER_KINDS = ("wandb", "csv", "none")
WANDB_MODES = ("auto", "online", "offline", "disabled")


def wandb_logged_in() -> bool:
    """Whether an API key is available without asking (env var or ~/.netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        rc = netrc.netrc(os.environ.get("NETRC", Path.home() / ".netrc"))
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("//")[-1]
    return rc.authenticators(host) is not None


def resolve_wandb_mode(requested: str) -> str:
    env = os.environ.get("WANDB_MODE")
    if requested == "auto" and env in ("online", "offline", "disabled", "dryrun"):
        return "offline" if env == "dryrun" else env
    if requested == "auto":
        return "online" if wandb_logged_in() else "offline"
    return requested


WANDB_ID_FILE = "wandb_run_id"  # in the run directory: a resumed run logs to the same W&B run


def csv_rows_before(path: Path, resume_step: int) -> tuple[list[str], list[dict]]:
    """The header and the rows a run logged up to its checkpoint at ``resume_step``.

    Lightning's CSV rows carry ``step`` = optimiser steps taken before the row (a training
    row of step k, 1-based, says k-1; an evaluation says the steps done), so rows with
    ``step < resume_step`` are exactly those the checkpoint covers; later ones (logged
    between the checkpoint and a kill) are logged again by the resumed run.
    """
    if not path.exists():
        return [], []
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        return list(reader.fieldnames or []), [row for row in reader if int(row["step"]) < resume_step]


def continued_csv_logger(run_dir: Path, resume_step: int | None):
    """Lightning's CSVLogger, which deletes an existing metrics.csv when it starts; a resumed
    run's logger starts from the rows before its checkpoint instead (one history)."""
    from lightning.pytorch.loggers import CSVLogger

    fields, rows = csv_rows_before(run_dir / "csv" / "metrics.csv", resume_step) if resume_step else ([], [])

    class ContinuedCSVLogger(CSVLogger):
        @property
        def experiment(self):
            first = self._experiment is None
            with warnings.catch_warnings():
                if fields:  # "previous log files will be deleted": not so, they are put back below
                    warnings.filterwarnings("ignore", message=".*Previous log files in this directory")
                writer = CSVLogger.experiment.fget(self)  # rank 0's writer, a no-op object elsewhere
            if first and fields and self._experiment is not None:
                with open(writer.metrics_file_path, "w", newline="") as file:
                    out = csv.DictWriter(file, fieldnames=fields)
                    out.writeheader()
                    out.writerows(rows)
                writer.metrics_keys = list(fields)
            return writer

    return ContinuedCSVLogger(save_dir=str(run_dir), name="csv", version="")


def wandb_run_id(run_dir: Path, resuming: bool) -> str:
    """The run directory's W&B id when resuming, else a new one (stored for a later resume)."""
    path = run_dir / WANDB_ID_FILE
    if resuming and path.exists():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:12]
    path.write_text(run_id + "\n")
    return run_id


def build_logger(cfg: DictConfig, run_dir: Path, run_config: DictConfig, resume_step: int | None = None):
    """The experiment logger; ``resume_step``: the global step of the checkpoint a run continues
    from (the CSV log and the W&B run then continue instead of starting over)."""
    kind = cfg.kind
    if kind not in LOGGER_KINDS:
        raise ConfigError(f"logger.kind={kind!r} is unknown; choose one of {list(LOGGER_KINDS)}")
    if kind == "none":
        return None
    if kind == "csv":
        return continued_csv_logger(run_dir, resume_step)
    if cfg.mode not in WANDB_MODES:
        raise ConfigError(f"logger.mode={cfg.mode!r} is unknown; choose one of {list(WANDB_MODES)}")
    from lightning.pytorch.loggers import WandbLogger

    mode = resolve_wandb_mode(cfg.mode)
    os.environ.setdefault("WANDB_SILENT", "true")
    logger = WandbLogger(
        project=cfg.project,
        entity=cfg.get("entity"),
        name=cfg.get("name"),
        group=cfg.get("group"),
        tags=list(cfg.get("tags") or []),
        save_dir=str(run_dir),
        mode=mode,
        id=wandb_run_id(run_dir, resuming=resume_step is not None),
        resume="allow",
        config=OmegaConf.to_container(run_config, resolve=True),
    )
    if mode == "offline":
        log.warning(
            "W&B is offline (no login found). The run is saved under %s/wandb; upload it later with: "
            "wandb sync %s/wandb/offline-run-*", run_dir, run_dir,
        )
    return logger
