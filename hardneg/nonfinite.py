"""What a run does when a step goes non-finite: skip it (counted) or stop, with the right advice.

A step is non-finite when its loss is NaN/inf, or when its loss is finite but the gradient is
not (one overflowing sample is enough). Both are checked once per step: the loss is one
number, the gradient's total norm one fused reduction. A skipped step does not move the
weights. ``nonfinite=stop`` stops at the first such step; ``nonfinite=skip`` stops after
``max_consecutive_nonfinite`` in a row, because by then the run is not recovering. Weights
that are themselves NaN/inf (e.g. ``optim.optimizer.lr=1e38``) stop the run at once:
skipping steps cannot repair them.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from hardneg.errors import UserError

POLICIES = ("skip", "stop")
CAUSES = "Usual causes: a learning rate too high (optim.optimizer.lr), a corrupt input, or fp16 overflow."


class NonFiniteLossError(UserError):
    """The loss or the gradient became NaN or inf and the run was configured (or forced) to stop."""


def gradient_norm(parameters: Iterable[torch.nn.Parameter]) -> Tensor | None:
    """Total 2-norm of the gradients (inf/NaN if any entry is), without a host sync."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return None
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def nonfinite_parameters(parameters: Iterable[tuple[str, torch.nn.Parameter]]) -> list[str]:
    return [name for name, p in parameters if not torch.isfinite(p).all()]


def broken_weights(module: torch.nn.Module, inputs: Tensor, outputs: Tensor) -> str | None:
    """Why the weights cannot produce a finite step any more, or None.

    Asked only after a non-finite loss (one pass over the weights): NaN/inf weights, or finite
    weights so large that finite inputs give a NaN/inf output (e.g. ``lr=1e38``: ~1e37).
    """
    bad = nonfinite_parameters(module.named_parameters())
    if bad:
        return f"{len(bad)} weight tensor(s) hold NaN/inf (first: {bad[0]})"
    if torch.isfinite(inputs).all() and not torch.isfinite(outputs).all():
        largest = max(float(p.detach().abs().max()) for p in module.parameters() if p.numel())
        return f"the network's output is NaN/inf for finite inputs (largest |weight| {largest:.3g})"
    return None


class NonFiniteGuard:
    """Counts skipped steps and decides when to stop; its counters go into checkpoints."""

    def __init__(self, policy: str = "skip", max_consecutive: int = 10):
        if policy not in POLICIES:
            raise ValueError(f"nonfinite={policy!r} is unknown; choose one of {list(POLICIES)}")
        if max_consecutive < 0:
            raise ValueError(f"max_consecutive_nonfinite must be >= 0, got {max_consecutive}")
        self.policy, self.max_consecutive = policy, max_consecutive
        self.skipped_steps = 0
        self.consecutive = 0

    def step_ok(self) -> None:
        self.consecutive = 0

    def step_bad(self, what: str, where: str, detail: str = "", broken: str | None = None) -> None:
        """Count one skipped step; raise NonFiniteLossError when the policy says stop.

        ``broken``: why the weights themselves are unusable (see ``broken_weights``), if they are.
        """
        self.skipped_steps += 1
        self.consecutive += 1
        detail = f" ({detail})" if detail else ""
        head = f"non-finite {what} at {where}{detail}; {self.skipped_steps} step(s) skipped so far."
        if broken:
            raise NonFiniteLossError(
                f"{head} The weights themselves are unusable: {broken}. An earlier step with a finite loss "
                "moved them too far, so skipping steps cannot help. Lower optim.optimizer.lr and start again "
                "(resume=never)."
            )
        if self.policy == "stop":
            raise NonFiniteLossError(f"{head} {CAUSES} Set nonfinite=skip to skip such steps instead of stopping.")
        if self.consecutive > self.max_consecutive:
            raise NonFiniteLossError(
                f"{head} That is {self.consecutive} non-finite steps in a row, more than "
                f"max_consecutive_nonfinite={self.max_consecutive}: the run is not recovering. {CAUSES} "
                "Raise max_consecutive_nonfinite to tolerate longer streaks."
            )

    def state_dict(self) -> dict:
        return {"skipped_steps": self.skipped_steps, "consecutive": self.consecutive}

    def load_state_dict(self, state: dict) -> None:
        self.skipped_steps, self.consecutive = int(state["skipped_steps"]), int(state["consecutive"])
