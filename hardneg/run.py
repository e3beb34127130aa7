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
    # test/* metrics are computed on the gathered embeddings: already global, no sync needed.
    warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: "litlogger" not in record.getMessage()
    )


def train(cfg: DictConfig) -> dict:
    """Train and evaluate as ``cfg`` says; return the metrics before and after training.

    Returns ``{"initial": {...}, "final": {...}, "history": [(epoch, {...})], "run_dir": str,
    "skipped_steps": int, "train": {...last step's stats}}``.
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
    except Exception as err:  # Hydra's instantiate wraps our ValueErrors; unwrap the message
        from hydra.errors import InstantiationException

        if isinstance(err, InstantiationException):
            _report_error(err)
            sys.exit(2)
        raise
    # The returned value is what Hydra sweepers optimise.
    return result["final"].get(cfg.get("optimized_metric", "recall@1"))


def cli() -> None:
    """``python -m hardneg.run`` / ``hardneg-run``: typos in override keys and group options get
    a "did you mean" and exit code 2 before Hydra starts; the rest is Hydra's ``main``."""
    from hardneg.validate import check_command_line

    check_command_line(sys.argv[1:])
    main()


if __name__ == "__main__":
    cli()
