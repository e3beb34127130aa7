"""Turn a composed config into the objects of one run, and run it.

Kept apart from ``run.py`` so that tests and notebooks can build pieces (a criterion, a
datamodule) without the Hydra entry point.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from hardneg.criterion import Criterion
from hardneg.errors import ConfigError
from hardneg.loggers import build_logger
from hardneg.models import EmbeddingNet
from hardneg.models.feature_cache import cached_backbone_features
from hardneg.module import MetricLearningModule
from hardneg.report import print_results

log = logging.getLogger("hardneg")


def build_net(cfg: DictConfig) -> tuple[EmbeddingNet, bool]:
    """The embedding net and whether the frozen-backbone feature cache is on."""
    params = OmegaConf.to_container(cfg.model, resolve=True)
    cache = bool(params.pop("cache_features", False))
    if cache and not params.get("freeze_backbone", False):
        raise ConfigError("model.cache_features=true needs model.freeze_backbone=true (features must not change)")
    return instantiate(params), cache


def build_criterion(cfg: DictConfig, num_train_classes: int | None = None) -> Criterion:
    """Loss + miner; losses that hold per-class proxies get ``num_classes`` from the data."""
    loss_cfg = cfg.loss
    # `in` is False for a ??? value in OmegaConf: ask the keys.
    if "num_classes" in loss_cfg.keys() and OmegaConf.is_missing(loss_cfg, "num_classes"):
        if num_train_classes is None:
            raise ConfigError("loss.num_classes is required (number of training classes)")
        loss_cfg = OmegaConf.merge(loss_cfg, {"num_classes": num_train_classes})
    return Criterion(instantiate(loss_cfg), instantiate(cfg.mining))


def build_callbacks(cfg: DictConfig, run_dir: Path) -> list:
    callbacks = []
    for spec in (cfg.get("callbacks") or {}).values():
        if spec is not None:  # callbacks.<name>=null disables one
            callbacks.append(instantiate(spec))
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last=True, save_top_k=0)
    return callbacks + [ckpt]


@dataclass
class Run:
    cfg: DictConfig
    run_dir: Path
    datamodule: L.LightningDataModule
    module: MetricLearningModule
    trainer: L.Trainer

    def execute(self) -> dict:
        """Evaluate at epoch 0, train, evaluate at the end; print and save the results."""
        try:
            return self._execute()
        finally:
            finish_loggers(self.trainer)

    def _execute(self) -> dict:
        trainer, module, dm = self.trainer, self.module, self.datamodule
        if self.cfg.eval.at_start:
            trainer.validate(module, datamodule=dm, verbose=False)
        trainer.fit(module, datamodule=dm)
        if not module.eval_history or module.eval_history[-1][0] != trainer.current_epoch:
            trainer.validate(module, datamodule=dm, verbose=False)
        history = module.eval_history
        result = {
            "initial": history[0][1] if self.cfg.eval.at_start else {},
            "final": history[-1][1],
            "history": [[epoch, metrics] for epoch, metrics in history],
            "run_dir": str(self.run_dir),
            "skipped_steps": module.skipped_steps,
            "summary": module.summary,
            "train": {k: float(v) for k, v in module.last_train_stats.items() if v.dim() == 0},
        }
        if trainer.is_global_zero:
            (self.run_dir / "results.json").write_text(json.dumps(result, indent=2))
            print_results(result, self.cfg)
        return result


def finish_loggers(trainer: L.Trainer) -> None:
    """Close the W&B run: Hydra's basic launcher runs sweep jobs in one process, and a
    still-open run would swallow the next job's logs."""
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger" and logger._experiment is not None:
            logger.experiment.finish()


def build_run(cfg: DictConfig, run_dir: Path) -> Run:
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    torch.set_float32_matmul_precision(cfg.get("matmul_precision", "highest"))
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    net, use_cache = build_net(cfg)
    if use_cache:
        datamodule.use_features(*cached_backbone_features(net, datamodule, cfg.paths.cache_dir))
    num_train_classes = int(datamodule.splits.train.labels.max()) + 1
    module = MetricLearningModule(
        net=net,
        criterion=build_criterion(cfg, num_train_classes),
        optimizer=instantiate(cfg.optim.optimizer),
        scheduler=instantiate(cfg.optim.scheduler) if cfg.optim.get("scheduler") else None,
        recall_ks=tuple(datamodule.recall_ks),
        query_gallery=datamodule.protocol == "query_gallery",
        nonfinite=cfg.nonfinite,
        inputs_are_features=use_cache,
        eval_backend=cfg.eval.backend,
    )
    if cfg.model.batchnorm == "sync" and not torch.cuda.is_available():
        raise ConfigError("model.batchnorm=sync needs GPUs (SyncBatchNorm); use train or frozen on CPU")
    trainer = instantiate(
        cfg.trainer,
        logger=build_logger(cfg.logger, run_dir, cfg) or False,
        callbacks=build_callbacks(cfg, run_dir),
        default_root_dir=str(run_dir),
        # The class-balanced batch sampler shards by whole classes itself (data/samplers.py).
        use_distributed_sampler=False,
        sync_batchnorm=cfg.model.batchnorm == "sync",
    )
    return Run(cfg, run_dir, datamodule, module, trainer)
