"""Where the Hydra configs live, and composing them from Python (tests, notebooks)."""
from __future__ import annotations

import warnings
from pathlib import Path

from omegaconf import DictConfig

# conf/hydra/launcher/{submitit_slurm,joblib}.yaml keep the launcher plugins' names, so that
# `hydra/launcher=submitit_slurm` gives our presets; Hydra then validates them against the
# plugins' schemas and warns that this matching is deprecated. They list every field and
# `_target_`, so they work without it too: the warning says nothing a user must act on.
warnings.filterwarnings(
    "ignore", message=r"\s*'hydra/launcher/(submitit_slurm|joblib)' is validated against ConfigStore schema"
)


def config_dir() -> Path:
    """The ``conf/`` tree: the repository's in a checkout, the packaged copy after ``pip install``."""
    for candidate in (Path(__file__).resolve().parent.parent / "conf", Path(__file__).resolve().parent / "conf"):
        if (candidate / "config.yaml").exists():
            return candidate
    raise FileNotFoundError("hardneg's conf/ directory is missing from this installation; reinstall hardneg")


def compose(overrides: list[str] | None = None, config_name: str = "config") -> DictConfig:
    """The resolved-on-access config that ``python -m hardneg.run <overrides>`` would use."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides or []))
