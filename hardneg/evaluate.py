"""``python -m hardneg.evaluate ckpt=...``: retrieval metrics of a saved checkpoint, no training.

The net is rebuilt from the run config saved in the checkpoint
(``MetricLearningModule.load_from_checkpoint``): always the model it was trained with. The
dataset: when the checkpoint sits in a run directory (``<run_dir>/checkpoints/*.ckpt``) the
run's saved ``config.yaml`` supplies ``data`` unless ``data=...`` is given on the command line.

Safety: a checkpoint or config from elsewhere is data, not code. The checkpoint is read with
``torch.load(weights_only=True)`` (tensors and plain values only); one that needs more is refused
unless ``trust_checkpoint=true``. A ``_target_`` taken from the run's config.yaml is instantiated
only from hardneg's own namespace, one from the checkpoint's saved config only from the
namespaces a config may use, unless ``allow_foreign_targets=true``.

The evaluation is the training run's (``hardneg.evaluation``): same metrics, same checks
(non-finite embeddings per ``eval.nonfinite``, recall Ks that fit the test set). Test
embeddings and labels are saved for later analysis (``hardneg.analyze``, notebooks).
"""
from __future__ import annotations

import json
import logging
import pickle
import sys
from collections.abc import Iterable
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from hardneg.config import config_dir
from hardneg.errors import ConfigError, UserError

log = logging.getLogger("hardneg")
RUN_GROUPS = ("model", "data")  # taken from the checkpoint's run unless chosen on the command line
OWN_NAMESPACE = "hardneg."


def checkpoint_run_config(ckpt: Path) -> DictConfig | None:
    candidate = ckpt.resolve().parent.parent / "config.yaml"
    return OmegaConf.load(candidate) if candidate.exists() else None


def foreign_targets(node, where: str = "") -> list[str]:
    """``key: target`` for every ``_target_`` outside hardneg's namespace in a config subtree."""
    found = []
    if isinstance(node, dict):
        target = node.get("_target_")
        if isinstance(target, str) and not target.startswith(OWN_NAMESPACE):
            found.append(f"{where or '<root>'}._target_={target}")
        for key, value in node.items():
            found += foreign_targets(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += foreign_targets(value, f"{where}[{i}]")
    return found


def with_run_config(cfg: DictConfig, chosen: Iterable[str] = ()) -> DictConfig:
    """Take ``model`` and ``data`` from the checkpoint's run, except the groups in ``chosen``
    (given on the command line). Refuses foreign ``_target_``s unless ``allow_foreign_targets``."""
    ckpt = Path(cfg.ckpt)
    run_cfg = checkpoint_run_config(ckpt)
    if run_cfg is None:
        return cfg
    taken = {group: run_cfg[group] for group in RUN_GROUPS if group not in set(chosen) and group in run_cfg}
    if not taken:
        return cfg
    foreign = foreign_targets(OmegaConf.to_container(OmegaConf.create(taken), resolve=False))
    if foreign and not cfg.get("allow_foreign_targets", False):
        raise ConfigError(
            f"the run config next to {ckpt} names classes outside hardneg: {', '.join(foreign)}. "
            "A config from elsewhere could run any code this way; if you trust it, pass allow_foreign_targets=true "
            "(or choose model=... / data=... on the command line)"
        )
    log.info("%s config taken from %s", " and ".join(taken), ckpt.resolve().parent.parent / "config.yaml")
    # The run's groups replace the defaults wholesale: merging would keep keys the run did not have.
    merged = OmegaConf.to_container(cfg, resolve=False)
    merged.update(OmegaConf.to_container(OmegaConf.create(taken), resolve=False))
    return OmegaConf.create(merged)


def read_checkpoint(ckpt: Path, trust: bool = False, map_location="cpu") -> dict:
    """A Lightning checkpoint's contents, read as data (tensors and plain values) unless ``trust``."""
    if not ckpt.exists():
        raise UserError(f"checkpoint {ckpt} does not exist; pass ckpt=<run_dir>/checkpoints/last.ckpt")
    try:
        checkpoint = torch.load(ckpt, map_location=map_location, weights_only=not trust)
    except pickle.UnpicklingError as err:
        raise UserError(
            f"{ckpt} holds objects beyond tensors and plain values, which loading would execute as code "
            f"({str(err).splitlines()[0][:200]}). If you trust where it comes from, pass trust_checkpoint=true"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UserError(f"{ckpt} is not a hardneg/Lightning checkpoint (no state_dict in it)")
    return checkpoint


def load_state_dict(ckpt: Path, trust: bool = False) -> dict:
    return read_checkpoint(ckpt, trust)["state_dict"]


def load_net(cfg: DictConfig, ckpt: Path):
    """The checkpoint's embedding net, rebuilt from the run config saved in it: the model it was
    trained with, whatever ``model=`` says."""
    from hardneg.module import MetricLearningModule

    module = MetricLearningModule.load_from_checkpoint(
        ckpt, trust_checkpoint=cfg.get("trust_checkpoint", False),
        allow_foreign_targets=cfg.get("allow_foreign_targets", False),
    )
    saved_model = module.hparams["run_config"]["model"]
    if saved_model != OmegaConf.to_container(cfg.model, resolve=True):
        log.info("%s: using the model it was trained with (%s), not model=%s", ckpt,
                 saved_model.get("backbone"), cfg.model.get("backbone"))
    return module.net.eval()


@torch.no_grad()
def embed(net, dataset, batch_size: int, num_workers: int = 0):
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    embeddings, labels, indices = [], [], []
    for x, y, index in loader:
        embeddings.append(net(x))
        labels.append(y)
        indices.append(index)
    return torch.cat(embeddings), torch.cat(labels), torch.cat(indices)


def evaluate(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    from hydra.utils import instantiate

    from hardneg.evaluation import evaluate_embeddings
    from hardneg.metrics.knn import check_backend

    check_backend(cfg.eval.backend)
    ckpt = Path(cfg.ckpt)
    net = load_net(cfg, ckpt)
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    test = datamodule.splits.test
    embeddings, labels, indices = embed(net, test, datamodule.eval_batch_size, datamodule.num_workers)
    is_query = getattr(test, "is_query", None)
    evaluation = evaluate_embeddings(
        embeddings, labels, indices, None if is_query is None else torch.as_tensor(is_query)[indices].bool(),
        ks=tuple(datamodule.recall_ks), nonfinite=cfg.eval.get("nonfinite", "error"),
    )
    metrics = evaluation.metrics
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").write_text(json.dumps({"ckpt": str(ckpt), **metrics}, indent=2))
    if cfg.save_embeddings:
        torch.save({"embeddings": evaluation.embeddings, "labels": evaluation.labels, "indices": evaluation.indices,
                    "is_query": evaluation.is_query, "dropped": evaluation.dropped}, output_dir / "embeddings.pt")
    return metrics


def _chosen_groups() -> list[str]:
    """The config groups of RUN_GROUPS given on the command line (``model=...``, ``data.x=...``)."""
    from hydra.core.hydra_config import HydraConfig

    keys = [o.split("=")[0].lstrip("+~") for o in HydraConfig.get().overrides.task]
    return [group for group in RUN_GROUPS if any(k == group or k.startswith(f"{group}.") for k in keys)]


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from rich.console import Console
    from rich.table import Table

    from hardneg.run import _report_error, quiet_libraries

    quiet_libraries()
    try:
        cfg = with_run_config(cfg, _chosen_groups())
        out = Path(cfg.paths.output_dir or HydraConfig.get().runtime.output_dir)
        metrics = evaluate(cfg, out)
    except UserError as err:
        _report_error(err)
        sys.exit(2)
    table = Table(title=Path(cfg.ckpt).name)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4f}")
    Console().print(table)
    Console().print(f"saved to {out}")


if __name__ == "__main__":
    main()
