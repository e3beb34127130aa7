"""The LightningModule: embedding net + criterion (miner + loss) + retrieval evaluation.

One training step (docs/architecture.md):
  images -> EmbeddingNet -> E [B_local, D] -> all_gather with gradients (DDP, mining.scope=global)
  -> Criterion: S = E_local @ E_global^T -> miner -> (S_ap, S_an) -> loss, stats
Evaluation embeds the test split (each process its shard), gathers it on every process and
makes one ``hardneg.evaluation.Evaluation`` (Recall@K / MAP@R on held-out classes, best positive /
negative per query, collapse statistics), which callbacks receive through ``on_evaluation``.
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
from hardneg.evaluation import NONFINITE_POLICIES as EVAL_NONFINITE_POLICIES
from hardneg.evaluation import EmbeddingBuffer, Evaluation, evaluate_embeddings
from hardneg.memory import CrossBatchMemory
from hardneg.metrics.knn import check_backend
from hardneg.models import EmbeddingNet
from hardneg.nonfinite import NonFiniteGuard, NonFiniteLossError, broken_weights, gradient_norm
from hardneg.optim import build_optimizer

__all__ = ["MetricLearningModule", "NonFiniteLossError"]


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
        eval_nonfinite: str = "error",
        eval_nmi: bool = False,
        memory: CrossBatchMemory | None = None,
        param_groups: dict | None = None,
        run_config: dict | None = None,
    ):
        super().__init__()
        if run_config is not None:  # plain values only: load_from_checkpoint rebuilds net and criterion from it
            self.save_hyperparameters({"run_config": run_config, "recall_ks": list(recall_ks),
                                       "query_gallery": query_gallery}, logger=False)
        self.guard = NonFiniteGuard(nonfinite, max_consecutive_nonfinite)  # skip/stop policy and its counters
        self.net, self.criterion = net, criterion
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.inputs_are_features = inputs_are_features
        check_backend(eval_backend)
        if eval_nonfinite not in EVAL_NONFINITE_POLICIES:
            raise ValueError(f"eval.nonfinite={eval_nonfinite!r} is unknown; choose one of {list(EVAL_NONFINITE_POLICIES)}")
        self.recall_ks, self.query_gallery, self.eval_nonfinite = tuple(recall_ks), query_gallery, eval_nonfinite
        self.eval_nmi = eval_nmi
        self._eval_buffer = EmbeddingBuffer()
        self.memory = memory  # cross-batch memory (hardneg/memory); its bank is in the state_dict
        self.param_group_options = dict(param_groups or {})  # see hardneg/optim.py
        self._finite_batches_since_step = 0  # a step with none is skipped (on_before_optimizer_step)
        self.eval_history: list[tuple[int, dict[str, float]]] = []  # (epoch, metrics)
        self.last_train_stats: dict[str, Tensor] = {}  # the latest step's stats, incl. (S_ap, S_an) points
        self.last_evaluation: Evaluation | None = None  # the latest one (see on_validation_epoch_end)
        self.summary: dict[str, Any] = {}  # callbacks record run-level findings here (e.g. collapse)
        self.resumed_from: str | None = None  # the checkpoint this run continues (set by Run)

    # -- embedding -------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        return self.net.embed_features(x) if self.inputs_are_features else self.net(x)

    def _world_size(self) -> int:
        return self._trainer.world_size if self._trainer is not None else 1

    def _global_scope(self) -> bool:
        """Mining over the whole global batch is on (and matters: several processes)."""
        return self._world_size() > 1 and self.criterion.miner.scope == "global"

    def on_train_epoch_start(self) -> None:
        batches = float(self.trainer.num_training_batches)  # inf for a loader without a length
        if self._global_scope() and batches != float("inf"):  # a clear error, not a hanging gather
            count = torch.tensor([batches], device=self.device)
            distributed.check_equal_step_counts([int(c) for c in self.all_gather(count).view(-1).tolist()])

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
            return self._handle_nonfinite(loss, stats, x, embeddings)
        self._finite_batches_since_step += 1
        self.last_train_stats = stats
        if self._logger_writes_this_step():
            batch_size = len(labels)
            self.log("train/loss", loss.detach(), prog_bar=True, batch_size=batch_size)
            for key, value in stats.items():
                if value.dim() == 0:
                    self.log(f"train/{key}", value, prog_bar=key == "hn_ratio", batch_size=batch_size)
        return loss

    def _logger_writes_this_step(self) -> bool:
        """Lightning writes step metrics every ``trainer.log_every_n_steps`` steps (its own test,
        mirrored here); ``self.log`` costs ~0.4 ms a call on CPU, so the stats are logged only
        then (measured: 6 calls a step were +12 % step time on a tiny CPU model)."""
        every = self.trainer.log_every_n_steps
        return every > 0 and ((self.global_step + 1) % every == 0 or self.trainer.should_stop)

    def _loss_is_finite(self, loss: Tensor, same_on_all_ranks: bool = False) -> bool:
        bad = (~torch.isfinite(loss.detach())).float()
        if self._world_size() > 1 and not same_on_all_ranks:
            bad = self.trainer.strategy.reduce(bad, reduce_op="max")  # all ranks skip together
        return not bool(bad)

    @property
    def skipped_steps(self) -> int:
        return self.guard.skipped_steps

    def _where(self) -> str:
        return f"epoch {self.current_epoch}, step {self.global_step}"

    def _handle_nonfinite(self, loss: Tensor, stats: dict[str, Tensor], x: Tensor, embeddings: Tensor):
        detail = f"loss={loss.item()}, hn_ratio={float(stats.get('hn_ratio', float('nan'))):.3f}"
        broken = broken_weights(self, x, embeddings.detach())
        if self._world_size() > 1:  # every rank must stop together, or the others wait forever
            flag = torch.tensor(float(broken is not None), device=loss.device)
            if self.trainer.strategy.reduce(flag, reduce_op="max") and broken is None:
                broken = "another process found them NaN/inf or overflowing"
        self.guard.step_bad("loss", self._where(), detail, broken)
        self.log("train/skipped_steps", float(self.skipped_steps))
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
        # A finite loss can still have an overflowing gradient (after DDP's all-reduce here, so
        # every rank decides alike); such a step is skipped the same way and counted.
        skip = self._finite_batches_since_step == 0
        if not skip:
            norm = gradient_norm(p for group in optimizer.param_groups for p in group["params"])
            if norm is not None and not torch.isfinite(norm):
                skip = True
                self.guard.step_bad("gradient", self._where(), f"gradient norm {norm.item()}")
                self.log("train/skipped_steps", float(self.skipped_steps))
            else:
                self.guard.step_ok()
        if skip:
            for group in optimizer.param_groups:
                for p in group["params"]:
                    p.grad = None
        self._finite_batches_since_step = 0

    # -- checkpoints: everything the run has accumulated, so that a resumed run continues it --
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["hardneg_module"] = {
            "eval_history": [[epoch, metrics] for epoch, metrics in self.eval_history],
            "summary": self.summary,
            "nonfinite": self.guard.state_dict(),
            "last_train_stats": {k: v.detach().cpu() for k, v in self.last_train_stats.items() if v.dim() == 0},
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("hardneg_module")
        if state is None:
            return
        self.eval_history = [(int(epoch), dict(metrics)) for epoch, metrics in state["eval_history"]]
        self.summary = state["summary"]
        self.guard.load_state_dict(state["nonfinite"])
        self.last_train_stats = dict(state["last_train_stats"])

    # -- evaluation ------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._eval_buffer.reset()

    def validation_step(self, batch, batch_idx: int) -> None:
        x, labels, index = batch
        self._eval_buffer.add(self(x), labels, index)

    def on_validation_epoch_end(self) -> None:
        """Gather the whole test set on every rank, evaluate it once (``hardneg.evaluation``),
        log the metrics and hand the ``Evaluation`` to every callback with ``on_evaluation``."""
        if self.trainer.sanity_checking:  # a few batches only: no evaluation to speak of
            self._eval_buffer.reset()
            return
        embeddings, labels, indices = self._eval_buffer.gather()  # a collective under DDP
        self._eval_buffer.reset()
        epoch = self.completed_epochs()
        evaluation = evaluate_embeddings(
            embeddings, labels, indices, self._is_query(indices), epoch=epoch, ks=self.recall_ks,
            nmi=self.eval_nmi, nonfinite=self.eval_nonfinite, neighbours=self._neighbours_needed(),
        )
        self.last_evaluation = evaluation
        self.eval_history.append((epoch, evaluation.metrics))
        # Every rank holds the same numbers: no reduction needed, and none may differ.
        for key, value in evaluation.metrics.items():
            self.log(f"test/{key}", value, prog_bar=key == "recall@1", sync_dist=False, rank_zero_only=False)
        for key in ("mean_similarity", "effective_rank", "dims_in_use"):
            self.log(f"test/{key}", evaluation.collapse[key], sync_dist=False, rank_zero_only=False)
        for callback in self.trainer.callbacks:
            if callable(getattr(callback, "on_evaluation", None)):
                callback.on_evaluation(self.trainer, self, evaluation)

    def _neighbours_needed(self) -> int:
        """Nearest neighbours to keep per query: callbacks say how many they show
        (``neighbours_needed``, e.g. the retrieval examples' top_k)."""
        return max([10, *(int(getattr(cb, "neighbours_needed", 0)) for cb in self.trainer.callbacks)])

    def _is_query(self, indices: Tensor) -> Tensor | None:
        """Query/gallery datasets mark their queries; looked up by dataset index once per evaluation."""
        if not self.query_gallery:
            return None
        datamodule = getattr(self.trainer, "datamodule", None)
        is_query = getattr(getattr(getattr(datamodule, "splits", None), "test", None), "is_query", None)
        if is_query is None:
            raise UserError("query_gallery evaluation needs the test split's is_query (which items are queries)")
        return torch.as_tensor(is_query)[indices.cpu()].bool()

    # What must reach the launching process under ddp_spawn (``distributed.return_state_to_launcher``).
    def launcher_state(self) -> dict:
        return {"eval_history": self.eval_history, "summary": self.summary, "nonfinite": self.guard.state_dict(),
                "last_train_stats": {k: v.detach().cpu() for k, v in self.last_train_stats.items()}}

    def load_launcher_state(self, state: dict) -> None:
        self.eval_history, self.summary = state["eval_history"], state["summary"]
        self.guard.load_state_dict(state["nonfinite"])
        self.last_train_stats = state["last_train_stats"]

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

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location="cpu", strict: bool = True,
                             trust_checkpoint: bool = False, allow_foreign_targets: bool = False):
        """The module of a hardneg checkpoint, rebuilt from the run config saved in it (no config
        files needed), in eval mode. Read with ``torch.load(weights_only=True)`` unless
        ``trust_checkpoint``; the saved ``_target_``s must lie in the namespaces a config may use
        (hardneg.validate) unless ``allow_foreign_targets``."""
        from hardneg.builders import module_from_checkpoint

        return module_from_checkpoint(checkpoint_path, map_location, strict, trust_checkpoint, allow_foreign_targets)
