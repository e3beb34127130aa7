"""Turn a composed config into the objects of one run, and run it.

Kept apart from ``run.py`` so that tests and notebooks can build pieces (a criterion, a
datamodule) without the Hydra entry point.
"""
from __future__ import annotations

import json
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from hardneg import distributed, resume
from hardneg.callbacks.checkpoint import ResumableCheckpoint, RunInterrupted
from hardneg.criterion import Criterion
from hardneg.errors import ConfigError, UserError
from hardneg.loggers import build_logger, run_summary, write_run_summary
from hardneg.memory.xbm import build_memory
from hardneg.models import EmbeddingNet
from hardneg.models.feature_cache import cached_backbone_features
from hardneg.module import MetricLearningModule, NonFiniteLossError
from hardneg.report import print_results
from hardneg.validate import validate_data

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


def build_module(cfg: DictConfig, net: EmbeddingNet, num_train_classes: int, recall_ks: tuple[int, ...],
                 query_gallery: bool, inputs_are_features: bool = False) -> MetricLearningModule:
    """The LightningModule of a run; it saves the resolved run config (with the number of
    training classes filled in) so that ``load_from_checkpoint`` can rebuild it."""
    run_config = OmegaConf.to_container(cfg, resolve=True)
    if isinstance(run_config.get("loss"), dict) and run_config["loss"].get("num_classes") == "???":
        run_config["loss"]["num_classes"] = num_train_classes
    criterion = build_criterion(cfg, num_train_classes)
    return MetricLearningModule(
        net=net,
        criterion=criterion,
        optimizer=instantiate(cfg.optim.optimizer),
        scheduler=instantiate(cfg.optim.scheduler) if cfg.optim.get("scheduler") else None,
        recall_ks=recall_ks,
        query_gallery=query_gallery,
        nonfinite=cfg.nonfinite,
        max_consecutive_nonfinite=cfg.max_consecutive_nonfinite,
        inputs_are_features=inputs_are_features,
        eval_backend=cfg.eval.backend,
        eval_nonfinite=cfg.eval.get("nonfinite", "error"),
        eval_nmi=bool(cfg.eval.get("nmi", False)),
        memory=build_memory(cfg.get("memory"), net.dim, criterion.loss),
        param_groups=OmegaConf.to_container(cfg.optim.param_groups, resolve=True) if cfg.optim.get("param_groups") else {},
        run_config=run_config,
    )


# The parts of a saved run config that rebuilding its module instantiates.
MODULE_GROUPS = ("model", "loss", "mining", "optim", "memory")


def module_from_checkpoint(path, map_location="cpu", strict: bool = True, trust: bool = False,
                           allow_foreign_targets: bool = False) -> MetricLearningModule:
    """``MetricLearningModule.load_from_checkpoint``: the module rebuilt from the run config the
    checkpoint holds, its weights loaded; the net embeds images (a run that trained on cached
    backbone features still saved the backbone), no pretrained weights are fetched."""
    from hardneg.evaluate import read_checkpoint
    from hardneg.validate import allowed_target_prefixes

    checkpoint = read_checkpoint(Path(path), trust, map_location)
    saved = checkpoint.get("hyper_parameters") or {}
    if "run_config" not in saved:
        raise UserError(
            f"{path} holds no run config (saved by an older hardneg); evaluate it with "
            "python -m hardneg.evaluate ckpt=... model=<the model it was trained with>"
        )
    cfg = OmegaConf.create(saved["run_config"])
    prefixes = allowed_target_prefixes()
    foreign = [t for t in _targets(OmegaConf.to_container(cfg, resolve=False), MODULE_GROUPS)
               if not t.split("=", 1)[1].startswith(prefixes)]
    if foreign and not allow_foreign_targets:
        raise ConfigError(
            f"the run config saved in {path} names classes outside {', '.join(p.rstrip('.') for p in prefixes)}: "
            f"{', '.join(foreign)}. Loading would run that code; if you trust the file, pass allow_foreign_targets=True"
        )
    cfg.model.pretrained, cfg.model.cache_features = False, False  # the checkpoint has the weights
    net, _ = build_net(cfg)
    module = build_module(cfg, net, int(cfg.loss.get("num_classes") or 0) or None, tuple(saved["recall_ks"]),
                          bool(saved["query_gallery"]))
    module.load_state_dict(checkpoint["state_dict"], strict=strict)
    return module.eval()


def _targets(node, groups=None, where: str = "") -> list[str]:
    """``key._target_=value`` for every ``_target_`` in (the given top-level groups of) a config."""
    found = []
    if isinstance(node, dict):
        if isinstance(node.get("_target_"), str):
            found.append(f"{where}._target_={node['_target_']}")
        for key, value in node.items():
            if groups is None or key in groups:
                found += _targets(value, None, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _targets(value, None, f"{where}[{i}]")
    return found


def build_callbacks(cfg: DictConfig, run_dir: Path) -> list:
    callbacks = []
    for spec in (cfg.get("callbacks") or {}).values():
        if spec is not None:  # callbacks.<name>=null disables one
            callbacks.append(instantiate(spec))
    # The checkpoint writer runs after the others at epoch end, so it saves their updated state.
    callbacks.sort(key=lambda c: isinstance(c, ResumableCheckpoint))
    for callback in callbacks:
        if isinstance(callback, ResumableCheckpoint):
            callback.run_config = OmegaConf.to_container(cfg, resolve=True)  # checked on resume
    return callbacks


@dataclass
class Run:
    cfg: DictConfig
    run_dir: Path
    datamodule: L.LightningDataModule
    module: MetricLearningModule
    trainer: L.Trainer
    ckpt_path: Path | None = None  # the checkpoint this run continues from (hardneg.resume)
    resumed: dict = field(default_factory=dict)  # that checkpoint's step and epoch

    def execute(self) -> dict:
        """Evaluate at epoch 0, train, evaluate at the end; print and save the results."""
        try:
            return self._execute()
        finally:
            finish_loggers(self.trainer)

    def _execute(self) -> dict:
        trainer, module, dm = self.trainer, self.module, self.datamodule
        if self.cfg.eval.at_start and self.ckpt_path is None:  # a resumed run has it in its history
            trainer.validate(module, datamodule=dm, verbose=False)
        try:
            try:
                trainer.fit(module, datamodule=dm, ckpt_path=self.ckpt_path, weights_only=True)
            except SystemExit:
                # Under DDP Lightning stops every rank on SIGTERM itself (SIGTERMException) at the
                # next batch, which can come before the checkpoint callback raises its own stop:
                # the checkpoint is written by then, so it is the same interruption.
                stop = next((c.interrupted for c in trainer.callbacks if isinstance(c, ResumableCheckpoint)
                             and c.interrupted is not None), None)
                if stop is None:
                    raise
                raise stop from None
        except RunInterrupted as stop:
            self._save_results("interrupted", signal=signal.Signals(stop.signum).name, checkpoint=str(stop.checkpoint),
                               continue_with=resume.continue_command(self.run_dir))
            raise
        except NonFiniteLossError as err:
            self._save_results("stopped", reason=str(err))
            raise
        finally:
            for callback in trainer.callbacks:
                if isinstance(callback, ResumableCheckpoint):
                    callback.restore_signal_handlers()
        stopped_early = trainer.should_stop and trainer.current_epoch < trainer.max_epochs  # e.g. collapse
        if not module.eval_history or module.eval_history[-1][0] != trainer.current_epoch:
            trainer.validate(module, datamodule=dm, verbose=False)
        result = self._save_results("stopped" if stopped_early else "completed")
        if trainer.is_global_zero:
            print_results(result, self.cfg)
        return result

    def _save_results(self, status: str, **extra) -> dict:
        """results.json: one history across resumes, and how the run ended (completed, stopped,
        interrupted: then with the command that continues it)."""
        module, path = self.module, self.run_dir / "results.json"
        history = module.eval_history
        resumes = []
        if self.ckpt_path is not None:
            if path.exists():
                resumes = json.loads(path.read_text()).get("resumes", [])
            resumes = [*resumes, {"checkpoint": str(self.ckpt_path), **self.resumed}]
        result = {
            "status": status,
            **extra,
            "initial": history[0][1] if history and history[0][0] == 0 else {},
            "final": history[-1][1] if history else {},
            "history": [[epoch, metrics] for epoch, metrics in history],
            "run_dir": str(self.run_dir),
            "skipped_steps": module.skipped_steps,
            "resumes": resumes,
            "summary": module.summary,
            "train": {k: float(v) for k, v in module.last_train_stats.items() if v.dim() == 0},
            # Images replaced by grey substitutes (data.on_corrupt); in-memory data has none.
            "corrupt_images": int(getattr(self.datamodule, "corrupt_image_count", lambda: 0)()),
        }
        if self.trainer.is_global_zero:
            write_run_summary(self.trainer.loggers, run_summary(result, result["corrupt_images"],
                                                                self.trainer.current_epoch))
            tmp = path.with_name(".results.json.tmp")
            tmp.write_text(json.dumps(result, indent=2))
            tmp.replace(path)
        return result


def finish_loggers(trainer: L.Trainer) -> None:
    """Close the W&B run: Hydra's basic launcher runs sweep jobs in one process, and a
    still-open run would swallow the next job's logs."""
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger" and logger._experiment is not None:
            logger.experiment.finish()


def build_run(cfg: DictConfig, run_dir: Path) -> Run:
    # Before any data is read: a checkpoint that cannot be continued fails in seconds.
    ckpt_path = resume.checkpoint_to_resume(cfg, run_dir)
    resumed = {}
    if ckpt_path is not None:
        state = resume.load_saved_state(ckpt_path)
        resume.check_config(cfg, ckpt_path, state)
        resumed = {"global_step": int(state["global_step"]), "epoch": int(state["epoch"])}
        log.info("resuming from %s (epoch %d, step %d)", ckpt_path, resumed["epoch"], resumed["global_step"])
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    torch.set_float32_matmul_precision(cfg.get("matmul_precision", "highest"))
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    validate_data(cfg, datamodule)  # what only the data's sizes tell, before features or nets
    net, use_cache = build_net(cfg)
    if use_cache:
        datamodule.use_features(*cached_backbone_features(net, datamodule, cfg.paths.cache_dir))
    num_train_classes = int(datamodule.splits.train.labels.max()) + 1
    module = build_module(cfg, net, num_train_classes, tuple(datamodule.recall_ks),
                          datamodule.protocol == "query_gallery", inputs_are_features=use_cache)
    if cfg.model.batchnorm == "sync" and not torch.cuda.is_available():
        raise ConfigError("model.batchnorm=sync needs GPUs (SyncBatchNorm); use train or frozen on CPU")
    trainer = instantiate(
        cfg.trainer,
        logger=build_logger(cfg.logger, run_dir, cfg, resumed.get("global_step")) or False,
        callbacks=build_callbacks(cfg, run_dir),
        default_root_dir=str(run_dir),
        # The class-balanced batch sampler shards by whole classes itself (data/samplers.py).
        use_distributed_sampler=False,
        sync_batchnorm=cfg.model.batchnorm == "sync",
        # last.ckpt comes from callbacks.checkpoint (ResumableCheckpoint), not Lightning's default.
        enable_checkpointing=False,
        **slurm_plugins(),
    )
    distributed.return_state_to_launcher(trainer)  # ddp_spawn: evaluations come back to this process
    module.resumed_from = str(ckpt_path) if ckpt_path is not None else None
    return Run(cfg, run_dir, datamodule, module, trainer, ckpt_path, resumed)


def slurm_plugins() -> dict:
    """Under SLURM, Lightning's own requeue handler would write a second, differently named
    checkpoint on SIGUSR1; callbacks.checkpoint saves last.ckpt and requeues instead (run.py)."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    return {"plugins": [SLURMEnvironment(auto_requeue=False)]} if SLURMEnvironment.detect() else {}
