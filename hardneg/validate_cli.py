"""The command-line side of config validation (``hardneg/validate.py`` holds the checks).

``check_command_line`` turns Hydra's own composition errors for a typo'd override key, a missing
group option or a misspelled ``experiment=`` into our messages (exit code 2, "did you mean");
``ValidateConfig`` is the Hydra callback that runs ``validate`` before the run directory exists.
"""
from __future__ import annotations

import sys
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hardneg.config import config_dir
from hardneg.errors import ConfigError, UserError
from hardneg.validate import _value, check_output_dir, did_you_mean, format_problems, problems

# -- the Hydra hook ---------------------------------------------------------------------------------

try:
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover - Hydra < 1.1
    _HydraCallback = object


def _stop(err: UserError) -> None:
    from hardneg.run import _report_error

    _report_error(err)
    sys.exit(2)


class ValidateConfig(_HydraCallback):
    """Validates the job's config before Hydra creates its run directory (single runs) or
    before each job starts (sweeps); a bad config exits with code 2 and the problems."""

    def _check(self, config: DictConfig, run_dir_key: str) -> None:
        found = problems(config)
        run_dir = _value(config, run_dir_key)
        if not _value(config, "paths.output_dir") and isinstance(run_dir, str):
            problem = check_output_dir(run_dir, run_dir_key)
            if problem:
                found.append(problem)
        if found:
            _stop(ConfigError(format_problems(found)))

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.run.dir")

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if str(_value(config, "hydra.mode")) == "RunMode.MULTIRUN":
            self._check(config, "hydra.sweep.dir")


# -- the command line, before Hydra composes it -------------------------------------------------


def _override_problem(err: Exception, overrides: list[str]) -> str | None:
    """Our message for the Hydra composition errors a typo causes, or None for any other error."""
    from hardneg.config import compose

    message = str(err)
    if message.startswith("Could not override '"):
        key = message.split("'")[1]
        parent_path, _, leaf = key.rpartition(".")
        rest = [o for o in overrides if o.split("=", 1)[0] != key]
        try:
            parent = OmegaConf.select(compose(rest), parent_path) if parent_path else compose(rest)
        except Exception:
            return None
        if not isinstance(parent, DictConfig):
            return None
        valid = sorted(str(k) for k in parent.keys() if k != "hydra")
        return (
            f"{key}: unknown key{did_you_mean(leaf, valid)}; valid keys: {valid}. "
            f"(To add a key the config does not have on purpose, write +{key}=...)"
        )
    if message.startswith("Could not append to config. An item is already at '"):
        key = message.split("'")[1]
        return f"+{key}: the config already has {key}; set it without the '+': {key}=..."
    if message.startswith("In '") and "Could not find '" in message:
        missing = message.split("Could not find '")[1].split("'")[0]
        group, _, option = missing.rpartition("/")
        return _missing_option(group, option) if group else None
    return None


def _missing_option(group: str, option: str) -> str | None:
    """A problem if ``conf/<group>/<option>.yaml`` does not exist."""
    folder = config_dir() / group
    if not folder.is_dir() or (folder / f"{option}.yaml").is_file():
        return None
    options = sorted(p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("*.yaml"))
    return f"{group}={option!r}: no such option{did_you_mean(option, options)}; choose one of {options}"


def check_command_line(argv: list[str]) -> None:
    """Catch what Hydra itself would reject with exit code 1 and a misleading hint (a typo in an
    override key gets "use +key=value", which would add the typo), and say it our way."""
    if any(arg.startswith("-") for arg in argv):  # --multirun, --cfg, --help...: Hydra's business
        return
    overrides = [arg for arg in argv if "=" in arg]
    if not overrides:
        return
    for override in overrides:
        # `optional experiment` in config.yaml: Hydra silently skips an experiment it cannot find.
        key, _, value = override.partition("=")
        if key.lstrip("+") == "experiment" and value not in ("", "null"):
            problem = _missing_option("experiment", value)
            if problem:
                _stop(ConfigError(format_problems([problem])))
    from hardneg.config import compose

    try:
        compose(overrides)
    except Exception as err:
        problem = _override_problem(err, overrides)
        if problem:
            _stop(ConfigError(format_problems([problem])))
