"""Experiment loggers: W&B (online when logged in, otherwise offline, never a prompt), CSV, none.

``conf/logger/*.yaml`` name one of the classes below by ``_target_``; its fields are the
options a user sets (``logger.project=...``, ``logger.tags=[a,b]``). Instantiating one gives
a small spec; ``build(run_dir, run_config, resume_step)`` makes the Lightning logger once the
run directory and the checkpoint to continue from are known (``logger=none``: ``_target_: null``).
"""
from __future__ import annotations

import csv
import logging
import netrc
import os
import re
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hardneg.errors import ConfigError

log = logging.getLogger(__name__)
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


def _short(target: Any, suffix: str = "") -> str:
    """``hardneg.losses.SCTLoss`` -> ``sct``; ``mypkg.HardestNegatives`` -> ``hardestnegatives``."""
    name = str(target).rsplit(".", 1)[-1]
    return (name.removesuffix(suffix) if suffix and name != suffix else name).lower()


def hydra_context() -> tuple[str | None, str | None]:
    """(the ``experiment=`` preset chosen, the sweep directory when run with ``-m``); Nones
    outside a Hydra app (tests, notebooks composing the config)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None, None
    hydra_cfg = HydraConfig.get()
    experiment = hydra_cfg.runtime.choices.get("experiment")
    sweep = hydra_cfg.sweep.dir if hydra_cfg.mode == RunMode.MULTIRUN else None
    return experiment, sweep


def run_identity(run_config: DictConfig, experiment: str | None = None, sweep_dir: str | None = None) -> dict:
    """What a run is, as people browse runs: its method (``sct-easy_hard``: loss, then the
    positive_negative mining), seed, data, the experiment preset, and the group of the sweep
    it belongs to (runs of one ``-m`` sweep share it)."""
    loss = _short(run_config.loss._target_, "Loss")
    mining = f"{_short(run_config.mining.pos)}_{_short(run_config.mining.neg)}"
    method = f"{loss}-{mining}"
    data = _short(run_config.data._target_, "DataModule")
    seed = int(run_config.seed)
    if sweep_dir:
        parts = Path(sweep_dir).parts
        # Hydra's default multirun/<date>/<time> -> <date>_<time>; a named one (multirun/cars_seeds) -> its name.
        timed = len(parts) > 1 and re.fullmatch(r"\d{2}-\d{2}-\d{2}", parts[-1])
        stamp = f"{parts[-2]}_{parts[-1]}" if timed else parts[-1]
        group = f"{experiment}-{stamp}" if experiment else stamp
    else:
        group = experiment
    return {"experiment": experiment, "method": method, "loss": loss, "mining": mining, "data": data,
            "seed": seed, "name": f"{method}-s{seed}", "group": group}


@dataclass
class WandbLogging:
    """W&B logging (``conf/logger/wandb.yaml``); ``None`` fields get names from the run:
    name ``<loss>-<pos>_<neg>-s<seed>``, group the experiment / sweep, tags its method,
    loss, mining, data, seed and experiment."""

    mode: str = "auto"  # auto | online | offline | disabled
    project: str = "hardneg"
    entity: str | None = None
    name: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)  # added to the run's own tags
    job_type: str | None = None
    notes: str | None = None
    log_model: bool | str = False  # WandbLogger's: true/"all" uploads checkpoints as artifacts

    def build(self, run_dir: Path, run_config: DictConfig, resume_step: int | None = None):
        if self.mode not in WANDB_MODES:
            raise ConfigError(f"logger.mode={self.mode!r} is unknown; choose one of {list(WANDB_MODES)}")
        from lightning.pytorch.loggers import WandbLogger

        identity = run_identity(run_config, *hydra_context())
        mode = resolve_wandb_mode(self.mode)
        os.environ.setdefault("WANDB_SILENT", "true")
        own_tags = [identity["method"], identity["loss"], identity["mining"], identity["data"],
                    f"seed{identity['seed']}", *([identity["experiment"]] if identity["experiment"] else [])]
        tags = list(dict.fromkeys([*own_tags, *(str(t) for t in self.tags or ())]))
        config = OmegaConf.to_container(run_config, resolve=True)
        config["run"] = {k: identity[k] for k in ("experiment", "method", "loss", "mining", "data", "seed")}
        logger = WandbLogger(
            project=self.project,
            entity=self.entity,
            name=self.name or identity["name"],
            group=self.group or identity["group"],
            tags=tags,
            job_type=self.job_type,
            notes=self.notes,
            log_model=self.log_model,
            save_dir=str(run_dir),
            mode=mode,
            id=wandb_run_id(run_dir, resuming=resume_step is not None),
            resume="allow",
            config=config,
        )
        if mode == "offline":
            log.warning(
                "W&B is offline (no login found). The run is saved under %s/wandb; upload it later with: "
                "wandb sync %s/wandb/offline-run-*", run_dir, run_dir,
            )
        return logger


@dataclass
class CSVLogging:
    """Lightning's CSV log in ``<run_dir>/csv/metrics.csv``, continued across resumes."""

    def build(self, run_dir: Path, run_config: DictConfig, resume_step: int | None = None):
        return continued_csv_logger(run_dir, resume_step)


def build_logger(cfg: DictConfig | None, run_dir: Path, run_config: DictConfig, resume_step: int | None = None):
    """The experiment logger of ``logger=...`` (None for ``logger=none``); ``resume_step``: the
    global step of the checkpoint a run continues from (the CSV log and the W&B run then
    continue instead of starting over)."""
    from hydra.utils import instantiate

    if cfg is None or cfg.get("_target_") is None:
        return None
    spec = instantiate(cfg)
    if not callable(getattr(spec, "build", None)):
        raise ConfigError(
            f"logger._target_={cfg._target_} has no build(run_dir, run_config, resume_step) method; "
            "use hardneg.loggers.WandbLogging or CSVLogging, or a class of yours with that method"
        )
    return spec.build(run_dir, run_config, resume_step)


def run_summary(result: dict, corrupt_images: int, stop_epoch: int) -> dict:
    """What a finished (or stopped, or interrupted) run tells at a glance: the W&B run summary."""
    collapse = (result.get("summary") or {}).get("collapse") or {}
    summary = {
        "status": result["status"],
        "stop_epoch": stop_epoch,
        "collapsed": bool(collapse.get("collapsed", False)),
        "corrupt_images": corrupt_images,
        "skipped_steps": result.get("skipped_steps", 0),
        **{f"final/{k}": v for k, v in (result.get("final") or {}).items()},
    }
    if collapse.get("collapsed"):
        summary["collapse_detected_epoch"] = collapse.get("detected_epoch")
        summary["collapse_message"] = collapse.get("message", "")
    return summary


def write_run_summary(loggers, summary: dict) -> None:
    """Into every W&B run's summary (rank 0 only: other ranks hold a no-op experiment)."""
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            logger.experiment.summary.update(summary)
