"""Experiment loggers: W&B (online when logged in, otherwise offline, never a prompt), CSV, none."""
from __future__ import annotations

import logging
import netrc
import os
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


def build_logger(cfg: DictConfig, run_dir: Path, run_config: DictConfig):
    kind = cfg.kind
    if kind not in LOGGER_KINDS:
        raise ConfigError(f"logger.kind={kind!r} is unknown; choose one of {list(LOGGER_KINDS)}")
    if kind == "none":
        return None
    if kind == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=str(run_dir), name="csv", version="")
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
        config=OmegaConf.to_container(run_config, resolve=True),
    )
    if mode == "offline":
        log.warning(
            "W&B is offline (no login found). The run is saved under %s/wandb; upload it later with: "
            "wandb sync %s/wandb/offline-run-*", run_dir, run_dir,
        )
    return logger
