"""The LightningModule: embedding net + criterion (miner + loss) + retrieval evaluation.

One training step (DESIGN.md):
  images -> EmbeddingNet -> E [B_local, D] -> all_gather with gradients (DDP, mining.scope=global)
  -> Criterion: S = E_local @ E_global^T -> miner -> (S_ap, S_an) -> loss, stats
Evaluation embeds the test split and computes Recall@K / MAP@R on held-out classes.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import Tensor

from hardneg import distributed
from hardneg.criterion import Criterion
from hardneg.errors import UserError
from hardneg.memory import CrossBatchMemory
from hardneg.metrics import RetrievalMetric
from hardneg.models import EmbeddingNet
from hardneg.optim import build_optimizer

NONFINITE_POLICIES = ("skip", "stop")


class NonFiniteLossError(UserError):
    """The loss became NaN or inf and the run was configured (or forced) to stop."""


class MetricLearningModule(L.LightningModule):
    def __init__(
        self,
        net: EmbeddingNet,
        criterion: Criterion,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        recall_ks: tuple[int, ...] = (1, 2, 4, 8),
        query_gallery: bool = False,
        nonfinite: str = "skip",
        max_consecutive_nonfinite: int = 10,
        inputs_are_features: bool = False,
        eval_backend: str = "torch",
        memory: CrossBatchMemory | None = None,
        param_groups: dict | None = None,
    ):
        super().__init__()
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite={nonfinite!r} is unknown; choose one of {list(NONFINITE_POLICIES)}")
        self.net, self.criterion = net, criterion
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.nonfinite, self.max_consecutive_nonfinite = nonfinite, max_consecutive_nonfinite
        self.inputs_are_features = inputs_are_features
        self.memory = memory  # cross-batch memory (hardneg/memory); its bank is in the state_dict
        self.param_group_options = dict(param_groups or {})  # see hardneg/optim.py
        self.eval_metric = RetrievalMetric(ks=tuple(recall_ks), query_gallery=query_gallery, backend=eval_backend)
        self.skipped_steps = 0
        self._consecutive_nonfinite = 0
        self._finite_batches_since_step = 0  # a step with none is skipped (on_before_optimizer_step)
        self.eval_history: list[tuple[int, dict[str, float]]] = []  # (epoch, metrics)
        self.last_train_stats: dict[str, Tensor] = {}  # the latest step's stats, incl. (S_ap, S_an) points
        self.last_eval: dict[str, Any] = {}  # the latest evaluation: metrics, embeddings, labels
        self.summary: dict[str, Any] = {}  # callbacks record run-level findings here (e.g. collapse)

    # -- embedding -------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        return self.net.embed_features(x) if self.inputs_are_features else self.net(x)

    def _world_size(self) -> int:
        return self._trainer.world_size if self._trainer is not None else 1

    def _global_scope(self) -> bool:
        """Mining over the whole global batch is on (and matters: several processes)."""
        return self._world_size() > 1 and self.criterion.miner.scope == "global"

    def _gather(self, embeddings: Tensor, labels: Tensor):
        """(references, their labels, this rank's anchors' columns among them, row gather).

        With ``mining.scope=global`` under DDP every rank's embeddings are gathered *with
        gradients* (the sampler gives every rank the same number of samples), and the
        criterion gets ``gather_rows`` to pool the mined triplets of all ranks: then every
        rank computes the one-device loss and the gradients equal one device on the whole
        global batch (see ``training_step``). ``scope=local`` mines each shard on its own.
        """
        local = torch.arange(len(labels), device=labels.device)
        if not self._global_scope():
            return embeddings, labels, local, None
        ref, ref_labels = distributed.gather_batch(embeddings, labels)
        return ref, ref_labels, local + self.global_rank * len(labels), distributed.gather_rows

    # -- training --------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int):
        """One step; under DDP with ``mining.scope=global`` exactly one device's step.

        Why it is exact: every rank computes the *same* scalar, the one-device loss over the
        pooled triplets of the global batch (pair/proxy losses: over the gathered batch).
        Each rank back-propagates it through the gathers, whose backward *sums* the gradient
        that all ``world_size`` ranks send to a sample, so every embedding receives
        ``world_size`` times its one-device gradient; DDP then *averages* the parameter
        gradients over ranks, which divides that factor out. Scaling each rank's own mean
        by ``world_size * local_count / global_count`` would do the same for a plain mean
        over triplets, but not for SCT's ``separate`` normalisation (two means), its
        ``official`` count (ties excluded), margin's ``nonzero`` or proxy losses (sums inside
        a log): pooling needs no knowledge of a loss's normalisation, and costs one gather
        of 2 numbers per triplet.
        """
        x, labels, index = batch
        embeddings = self(x)
        ref, ref_labels, self_index, gather = self._gather(embeddings, labels)
        if self.memory is not None:  # references: the batch plus the bank (hardneg/memory/xbm.py)
            loss, stats = self.memory(self.criterion, embeddings, labels, index, ref, ref_labels, self_index,
                                      gather=gather, step=self.global_step)
        else:
            loss, stats = self.criterion(embeddings, labels, ref, ref_labels, self_index, gather=gather)
        # A pooled loss is the same number on every rank, so the ranks agree without asking.
        if not self._loss_is_finite(loss, same_on_all_ranks=gather is not None):
            return self._handle_nonfinite(loss, stats)
        self._consecutive_nonfinite = 0
        self._finite_batches_since_step += 1
        self.last_train_stats = stats
        batch_size = len(labels)
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=batch_size)
        for key, value in stats.items():
            if value.dim() == 0:
                self.log(f"train/{key}", value, prog_bar=key == "hn_ratio", batch_size=batch_size)
        return loss

    def _loss_is_finite(self, loss: Tensor, same_on_all_ranks: bool = False) -> bool:
        bad = (~torch.isfinite(loss.detach())).float()
        if self._world_size() > 1 and not same_on_all_ranks:
            bad = self.trainer.strategy.reduce(bad, reduce_op="max")  # all ranks skip together
        return not bool(bad)

    def _handle_nonfinite(self, loss: Tensor, stats: dict[str, Tensor]):
        self.skipped_steps += 1
        self._consecutive_nonfinite += 1
        self.log("train/skipped_steps", float(self.skipped_steps))
        where = f"epoch {self.current_epoch}, step {self.global_step}"
        detail = f"loss={loss.item()}, hn_ratio={float(stats.get('hn_ratio', float('nan'))):.3f}"
        if self.nonfinite == "stop" or self._consecutive_nonfinite > self.max_consecutive_nonfinite:
            raise NonFiniteLossError(
                f"non-finite loss at {where} ({detail}); {self.skipped_steps} step(s) skipped so far. "
                "Usual causes: a learning rate too high (optim.optimizer.lr), a corrupt input, or fp16 "
                "overflow. Set nonfinite=skip to skip such steps instead of stopping."
            )
        # Returning None would skip backward, but Lightning refuses it under DDP (every rank
        # must run backward for the gradient all-reduce). An exact zero that reaches every
        # trainable parameter instead: backward runs everywhere, all gradients are 0 (never
        # NaN, even if a weight is), and on_before_optimizer_step drops the step itself.
        return self._zero_loss()

    def _zero_loss(self) -> Tensor:
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.stack([p.reshape(-1)[:0].sum() for p in params]).sum()

    def on_before_optimizer_step(self, optimizer) -> None:
        # A step all of whose (accumulated) batches were skipped must not move the weights:
        # the gradients are zeros, yet momentum and weight decay would still act. Optimisers
        # (and AMP's GradScaler) leave parameters without a gradient untouched.
        if self._finite_batches_since_step == 0:
            for group in optimizer.param_groups:
                for p in group["params"]:
                    p.grad = None
        self._finite_batches_since_step = 0

    # -- evaluation ------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self.eval_metric.reset()

    def validation_step(self, batch, batch_idx: int) -> None:
        x, labels, index = batch
        is_query = None
        test_set = getattr(self.trainer.datamodule, "splits", None) if self.trainer else None
        if test_set is not None and getattr(test_set.test, "is_query", None) is not None:
            is_query = test_set.test.is_query[index.cpu()].to(labels.device)
        self.eval_metric.update(self(x), labels, index, is_query)

    def on_validation_epoch_end(self) -> None:
        metrics = self.eval_metric.compute()
        epoch = self.completed_epochs()
        self.eval_history.append((epoch, metrics))
        # Kept for analysis callbacks (their on_validation_end runs after this hook).
        self.last_eval = {"epoch": epoch, "metrics": metrics, **self.eval_metric.gathered()}
        for key, value in metrics.items():
            self.log(f"test/{key}", value, prog_bar=key == "recall@1", sync_dist=False, rank_zero_only=False)
        self.eval_metric.reset()

    def completed_epochs(self) -> int:
        """Training epochs finished: inside ``fit`` the running epoch counts once it is
        evaluated; ``trainer.validate`` before training is epoch 0."""
        if self.trainer is not None and self.trainer.state.fn == "fit":
            return self.current_epoch + 1
        return self.current_epoch

    # -- optimisation ----------------------------------------------------------------------
    def configure_optimizers(self):
        # Parameter groups (backbone / head / loss proxies, optional layer-wise LR decay): hardneg/optim.py
        optimizer = build_optimizer(self.optimizer_factory, self.net, self.criterion, **self.param_group_options)
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "epoch"}}
