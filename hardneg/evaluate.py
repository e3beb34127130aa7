"""``python -m hardneg.evaluate ckpt=...``: retrieval metrics of a saved checkpoint, no training.

The model architecture must match the checkpoint: when the checkpoint sits in a run directory
(``<run_dir>/checkpoints/*.ckpt``) the run's saved ``config.yaml`` supplies ``model`` unless
``model=...`` is given on the command line. Test embeddings and labels are saved for later
analysis (``hardneg.analyze``, notebooks).
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from hardneg.config import config_dir
from hardneg.errors import UserError

log = logging.getLogger("hardneg")


def checkpoint_run_config(ckpt: Path) -> DictConfig | None:
    candidate = ckpt.resolve().parent.parent / "config.yaml"
    return OmegaConf.load(candidate) if candidate.exists() else None


def load_net(cfg: DictConfig, ckpt: Path):
    from hardneg.builders import build_net

    if not ckpt.exists():
        raise UserError(f"checkpoint {ckpt} does not exist; pass ckpt=<run_dir>/checkpoints/last.ckpt")
    params = OmegaConf.merge(cfg.model, {"cache_features": False, "pretrained": False})
    net, _ = build_net(OmegaConf.merge(cfg, {"model": params}))
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    weights = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    missing, unexpected = net.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise UserError(
            f"{ckpt} does not fit model={cfg.model.backbone} dim={cfg.model.dim}: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}; pass the model config the checkpoint was trained with"
        )
    return net.eval()


@torch.no_grad()
def embed(net, dataset, batch_size: int, num_workers: int = 0):
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    embeddings, labels = [], []
    for x, y, _ in loader:
        embeddings.append(net(x))
        labels.append(y)
    return torch.cat(embeddings), torch.cat(labels)


def evaluate(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    from hydra.utils import instantiate

    from hardneg.metrics import retrieval_metrics

    ckpt = Path(cfg.ckpt)
    net = load_net(cfg, ckpt)
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    test = datamodule.splits.test
    embeddings, labels = embed(net, test, datamodule.eval_batch_size, datamodule.num_workers)
    options = dict(ks=tuple(datamodule.recall_ks), backend=cfg.eval.backend)
    is_query = getattr(test, "is_query", None)
    if is_query is not None:
        q = is_query.bool()
        metrics = retrieval_metrics(embeddings[q], labels[q], embeddings[~q], labels[~q], **options)
    else:
        metrics = retrieval_metrics(embeddings, labels, **options)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").write_text(json.dumps({"ckpt": str(ckpt), **metrics}, indent=2))
    if cfg.save_embeddings:
        torch.save({"embeddings": embeddings, "labels": labels, "is_query": is_query}, output_dir / "embeddings.pt")
    return metrics


def _with_run_model(cfg: DictConfig) -> DictConfig:
    """Take ``model`` from the checkpoint's run unless the command line chose one."""
    from hydra.core.hydra_config import HydraConfig

    chosen = any(o.split("=")[0].lstrip("+~").startswith("model") for o in HydraConfig.get().overrides.task)
    run_cfg = checkpoint_run_config(Path(cfg.ckpt))
    if run_cfg is None or chosen:
        return cfg
    merged = OmegaConf.merge(cfg, {"model": run_cfg.model})
    log.info("model config taken from %s", Path(cfg.ckpt).resolve().parent.parent / "config.yaml")
    return merged


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from rich.console import Console
    from rich.table import Table

    from hardneg.run import _report_error, quiet_libraries

    quiet_libraries()
    try:
        cfg = _with_run_model(cfg)
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
