"""Collectives for exact global mining under DDP (see ``MetricLearningModule.training_step``)
and for gathering the test set of an evaluation (``gather_uneven``).

Why not Lightning's ``all_gather(x, sync_grads=True)``: it wraps ``torch.distributed.nn``'s
all_gather, whose backward on gloo is world_size scatter calls, and a step needs one gather for
the embeddings, one for their labels and one for the triplet counts besides. Each collective
costs about a millisecond between two busy CPU processes (more than a head-only step
computes), so here the backward is one collective, labels travel with the embeddings and the
gathers are as few as the data allow. Every function is a collective: all ranks must call it.
"""
from __future__ import annotations

import io

import torch
import torch.distributed as dist
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from torch import Tensor

from hardneg.errors import UserError

# torch >= 2.9 names them *_single and deprecates the old names; older torch has only those.
_all_gather_flat = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter_flat = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


class _AllGather(torch.autograd.Function):
    """[world, *x.shape]; the backward gives each rank the sum of what all ranks send to its rows."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        world = dist.get_world_size()
        out = x.new_empty((world * x.shape[0], *x.shape[1:]))
        _all_gather_flat(out, x.contiguous())
        return out.view(world, *x.shape)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        flat = grad.reshape(-1, *grad.shape[2:]).contiguous()
        if dist.get_backend() == "gloo":  # gloo's reduce-scatter is emulated; an all-reduce is faster
            flat = flat.clone()  # never reduce into a buffer autograd may share
            dist.all_reduce(flat)
            return flat.view_as(grad)[dist.get_rank()]
        out = grad.new_empty(grad.shape[1:])
        _reduce_scatter_flat(out, flat)
        return out


def check_equal_step_counts(counts: list[int]) -> None:
    """Global mining all-gathers the embeddings at every step, so every process must run the same
    number of steps; otherwise the processes with more steps wait at a gather that never comes
    (a gloo/NCCL timeout much later). ``counts``: training batches per epoch of each rank."""
    if len(set(counts)) > 1:
        per_rank = ", ".join(f"rank {rank}: {n}" for rank, n in enumerate(counts))
        raise UserError(
            f"the training processes have different numbers of batches per epoch ({per_rank}). "
            "With mining.scope=global every step all-gathers the embeddings, so every process must run "
            "the same number of steps. hardneg's class-balanced batch sampler (hardneg/data/samplers.py) "
            "shards by whole classes and gives every process the same count: use it for a custom dataset, "
            "or set trainer.limit_train_batches to a count every process reaches, or mine per process "
            "with mining.scope=local."
        )


def all_gather(x: Tensor) -> Tensor:
    """Every rank's ``x`` (same shape on all), stacked: [world, *x.shape]; differentiable."""
    return _AllGather.apply(x)


def gather_batch(embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """All ranks' embeddings (with gradients) and labels, concatenated in rank order, in one
    collective: labels ride along as an extra float64 column, exact for any id below 2**53
    (and embeddings of any float dtype go through float64 and back unchanged)."""
    packed = torch.cat([embeddings.double(), labels.double()[:, None]], dim=1)
    every = all_gather(packed).flatten(0, 1)
    return every[:, :-1].to(embeddings.dtype), every[:, -1].long()


def gather_rows(x: Tensor) -> Tensor:
    """Every rank's ``x`` [n_rank, ...], concatenated in rank order, with gradients.

    ``n_rank`` may differ between ranks (each mines its own number of triplets), and a collective
    needs equal shapes: the counts are exchanged first and the rows padded to the longest.
    """
    counts = torch.zeros(dist.get_world_size(), dtype=torch.long, device=x.device)
    _all_gather_flat(counts, torch.tensor([len(x)], device=x.device))
    counts = counts.tolist()
    longest = max(counts)
    if longest == 0:  # the same decision on every rank: no collective is left half-called
        return x
    if len(x) < longest:
        x = torch.cat([x, x.new_zeros(longest - len(x), *x.shape[1:])])
    gathered = all_gather(x)
    return torch.cat([gathered[rank, :n] for rank, n in enumerate(counts)])


@torch.no_grad()
def gather_uneven(x: Tensor) -> Tensor:
    """Every rank's ``x`` [n_rank, ...] (no gradients), concatenated in rank order; ``n_rank``
    may differ between ranks. Used by the evaluation to see the whole test set on every rank."""
    counts = torch.zeros(dist.get_world_size(), dtype=torch.long, device=x.device)
    _all_gather_flat(counts, torch.tensor([len(x)], device=x.device))
    counts = counts.tolist()
    longest = max(counts)
    if len(x) < longest:
        x = torch.cat([x, x.new_zeros(longest - len(x), *x.shape[1:])])
    out = x.new_empty((len(counts) * longest, *x.shape[1:]))
    _all_gather_flat(out, x.contiguous())
    out = out.view(len(counts), longest, *x.shape[1:])
    return torch.cat([out[rank, :n] for rank, n in enumerate(counts)])


def _ours(callback) -> bool:
    return type(callback).__module__.startswith("hardneg.")


class StateReturningLauncher(_MultiProcessingLauncher):
    """Lightning's spawn launcher, also returning the module's ``launcher_state()`` and the
    hardneg callbacks' ``state_dict()`` from rank 0 (see ``return_state_to_launcher``)."""

    def get_extra_results(self, trainer) -> dict:
        extra = super().get_extra_results(trainer)
        module = trainer.lightning_module
        state = {
            "module": module.launcher_state() if hasattr(module, "launcher_state") else None,
            "callbacks": {cb.state_key: cb.state_dict() for cb in trainer.callbacks if _ours(cb)},
            # The epoch counter, so that trainer.current_epoch here says how far training got.
            "epoch_progress": trainer.fit_loop.epoch_progress.state_dict(),
        }
        buffer = io.BytesIO()
        torch.save(state, buffer)  # bytes, as Lightning sends its own metrics (no shared memory)
        extra["hardneg_state_bytes"] = buffer.getvalue()
        return extra

    def update_main_process_results(self, trainer, extra: dict) -> None:
        super().update_main_process_results(trainer, extra)
        # Our own worker's data, written a moment ago by this program: not untrusted input.
        state = torch.load(io.BytesIO(extra["hardneg_state_bytes"]), weights_only=False)
        trainer.fit_loop.epoch_progress.load_state_dict(state["epoch_progress"])
        module = trainer.lightning_module
        if state["module"] is not None and hasattr(module, "load_launcher_state"):
            module.load_launcher_state(state["module"])
        for callback in trainer.callbacks:
            if _ours(callback) and callback.state_key in state["callbacks"]:
                callback.load_state_dict(state["callbacks"][callback.state_key])


def return_state_to_launcher(trainer) -> None:
    """Under ``strategy=ddp_spawn`` make each ``fit``/``validate`` bring the run's state back.

    The spawned workers train and evaluate; Lightning returns to the launching process only
    rank 0's weights (after ``fit``) and logged metrics, so the module's evaluation history,
    the run summary and the hardneg callbacks' state (collapse history, figure data) would stay
    behind, and the next ``validate``/``fit`` would start from stale copies. This swaps the
    trainer's spawn launcher for ``StateReturningLauncher`` (same state, one more result).
    Other strategies (``ddp`` re-launches the script; one device): nothing to do.
    """
    launcher = getattr(trainer.strategy, "launcher", None)
    if type(launcher) is _MultiProcessingLauncher:
        launcher.__class__ = StateReturningLauncher
