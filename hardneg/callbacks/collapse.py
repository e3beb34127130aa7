"""CollapseDetector: notices when training has made every embedding the same point.

That is the failure the paper explains for hardest negatives with NCA/triplet losses: the
gradient on a very hard negative pulls anchor, positive and negative together, triplets drift
to (1, 1), Recall@1 falls to or below its epoch-0 value and the NCA loss sticks at ln 2.
Detection uses the mean off-diagonal cosine similarity of the test embeddings after each
evaluation (``Evaluation.collapse``, see ``hardneg.analysis.collapse``); the epoch-0 evaluation
is the baseline, not a verdict (an untrained head may already map everything close together).
The evaluation is the whole test set on every rank, so every rank reaches the same verdict and
stops alike (a run stopping on one rank only would hang the others).
"""
from __future__ import annotations

import logging

import lightning as L

from hardneg.callbacks.publish import describe_loss, describe_mining

log = logging.getLogger("hardneg")
ACTIONS = ("stop", "continue")


class CollapseDetector(L.Callback):
    def __init__(self, threshold: float = 0.9, patience: int = 2, action: str = "stop"):
        if action not in ACTIONS:
            raise ValueError(f"callbacks.collapse.action={action!r} is unknown; choose one of {list(ACTIONS)}")
        if not -1.0 < threshold < 1.0:
            raise ValueError(f"callbacks.collapse.threshold must be in (-1, 1), got {threshold}")
        if patience < 1:
            raise ValueError(f"callbacks.collapse.patience must be >= 1, got {patience}")
        self.threshold, self.patience, self.action = threshold, patience, action
        self.history: dict[int, dict[str, float]] = {}  # epoch -> collapse stats
        self.fired_at: int | None = None
        self._recall_at_1: float | None = None  # of the latest evaluation, for the message

    # Saved in checkpoints so that a resumed run keeps its patience count and its verdict.
    def state_dict(self) -> dict:
        return {"history": {int(e): dict(s) for e, s in self.history.items()}, "fired_at": self.fired_at}

    def load_state_dict(self, state: dict) -> None:
        self.history = {int(e): dict(s) for e, s in state["history"].items()}
        self.fired_at = state["fired_at"]

    def _above_since(self) -> int | None:
        """First epoch of the current run of trained evaluations above the threshold."""
        since = None
        for epoch in sorted(self.history):
            if epoch > 0 and self.history[epoch]["mean_similarity"] > self.threshold:
                since = epoch if since is None else since
            else:
                since = None
        return since

    def on_evaluation(self, trainer: L.Trainer, pl_module, evaluation) -> None:
        """Called by the module after each evaluation with its ``hardneg.evaluation.Evaluation``."""
        epoch = evaluation.epoch
        self.history[epoch] = dict(evaluation.collapse)
        self._recall_at_1 = evaluation.metrics.get("recall@1")
        since = self._above_since()
        streak = sum(1 for e in self.history if since is not None and e >= since)
        record = pl_module.summary.setdefault("collapse", {"collapsed": False, "threshold": self.threshold})
        record["mean_similarity"] = {str(e): round(s["mean_similarity"], 5) for e, s in sorted(self.history.items())}
        if self.fired_at is not None and since is None and "recovered_epoch" not in record:
            record["recovered_epoch"] = epoch
        if self.fired_at is None and since is not None and streak >= self.patience:
            self._fire(trainer, pl_module, epoch, since, record)

    def _fire(self, trainer: L.Trainer, pl_module, epoch: int, since: int, record: dict) -> None:
        self.fired_at = epoch
        stats = self.history[epoch]
        # The last training step's logged stats (Lightning keeps them in callback_metrics).
        train = {k.removeprefix("train/"): float(v) for k, v in trainer.callback_metrics.items()
                 if k.startswith("train/")}
        message = self.explain(pl_module, epoch, since, stats, train)
        record.update(
            collapsed=True, since_epoch=since, detected_epoch=epoch, action=self.action,
            loss=describe_loss(pl_module), mining=describe_mining(pl_module),
            effective_rank=round(stats["effective_rank"], 4), dims_in_use=round(stats["dims_in_use"], 4),
            recall_at_1=self._recall_at_1,
            hn_ratio=train.get("hn_ratio"), message=message,
        )
        if trainer.is_global_zero:
            log.warning(message)
        if self.action == "stop" and trainer.state.fn == "fit":
            trainer.should_stop = True

    def explain(self, pl_module, epoch: int, since: int, stats: dict, train: dict) -> str:
        baseline = self.history.get(0)
        start = f" (epoch 0: {baseline['mean_similarity']:.3f})" if baseline else ""
        recall = self._recall_at_1
        hn = train.get("hn_ratio")
        lines = [
            f"Embedding collapse detected at epoch {epoch}: the test embeddings have a mean pairwise cosine "
            f"similarity of {stats['mean_similarity']:.3f}{start}, above callbacks.collapse.threshold="
            f"{self.threshold:g} in every evaluation since epoch {since}; effective rank "
            f"{stats['effective_rank']:.2f}, {stats['dims_in_use']:.0%} of the dimensions in use"
            + (f", Recall@1 {recall:.3f}." if recall is not None else "."),
            f"Loss {describe_loss(pl_module)} with {describe_mining(pl_module)} mining; last training step: "
            + (f"hn_ratio {hn:.3f}, " if hn is not None else "")
            + (f"mean S_ap {train['s_ap']:.3f}, mean S_an {train['s_an']:.3f}." if "s_ap" in train else "no triplets."),
            "This is the failure the paper describes for hardest negatives: the loss gradient on a very hard "
            "negative pulls anchor, positive and negative together, so triplets drift to (1, 1). Remedies: "
            "loss=sct (push only the negative away on hard triplets), mining=easy_semihard, or a lower "
            "optim.optimizer.lr.",
            "Stopping training (set callbacks.collapse.action=continue to keep going)." if self.action == "stop"
            else "Training continues (callbacks.collapse.action=continue).",
        ]
        return "\n".join(lines)
