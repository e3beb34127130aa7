"""Triplet-space figures and collapse diagnostics during training (logged to W&B as images).

Per training epoch: the 2-D histogram of the mined triplets' (S_ap, S_an) and the hn_ratio
curve; with a cross-batch memory, in two panels (negative from the batch | from the bank). Per evaluation (``on_evaluation``, called by the module with its ``Evaluation``): each
test anchor's best positive vs best negative, coloured by whether its nearest neighbour is
correct, and the curve of the collapse diagnostics of the test embeddings (the module logs them
as ``test/mean_similarity``, ``test/effective_rank``, ``test/dims_in_use``). Once per run: the
gradient field of the run's loss. Raw data go to ``<run_dir>/analysis`` so that
``python -m hardneg.analyze run_dir=...`` can redraw everything without retraining.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import lightning as L
import torch

from hardneg.analysis import artifacts
from hardneg.analysis.figures import DEFAULT_SCT_THRESHOLD, sct_threshold_of
from hardneg.analysis.triplet_diagram import DEFAULT_BINS, TripletCounts
from hardneg.callbacks.publish import describe_loss, describe_mining, log_images, sct_threshold

log = logging.getLogger("hardneg")


class TripletSpaceCallback(L.Callback):
    def __init__(self, bins: int = DEFAULT_BINS, train_every_n_epochs: int = 1, keep_embeddings: str = "first_last",
                 gradient_field: bool = True, collapse_threshold: float | None = None):
        if keep_embeddings not in artifacts.KEEP_EMBEDDINGS:
            raise ValueError(f"callbacks.triplet_space.keep_embeddings={keep_embeddings!r} is unknown; "
                             f"choose one of {list(artifacts.KEEP_EMBEDDINGS)}")
        if bins < 2 or train_every_n_epochs < 1:
            raise ValueError("callbacks.triplet_space: bins must be >= 2 and train_every_n_epochs >= 1")
        self.bins, self.train_every_n_epochs = bins, train_every_n_epochs
        self.keep_embeddings, self.gradient_field = keep_embeddings, gradient_field
        self.collapse_threshold = collapse_threshold  # drawn on the collapse curve (callbacks.collapse.threshold)
        self._counts: TripletCounts | None = None
        self._seen_stats = None  # the stats dict of the last step counted (skipped steps keep the old one)
        self._history: list[tuple[int, TripletCounts]] = []
        self._evaluations: dict[int, dict] = {}  # epoch -> geometry and metrics, for the curves
        self._started = False

    # -- checkpoints: the histories behind the curves, and the running epoch's histogram ---
    def state_dict(self) -> dict:
        pack = lambda c: None if c is None else c.state_dict()  # noqa: E731
        return {"counts": pack(self._counts), "history": [[e, pack(c)] for e, c in self._history],
                "evaluations": {int(e): v for e, v in self._evaluations.items()},
                "started": self._started}

    def load_state_dict(self, state: dict) -> None:
        unpack = lambda c: None if c is None else TripletCounts.from_state_dict(c)  # noqa: E731
        self._counts = unpack(state["counts"])
        self._history = [(int(e), unpack(c)) for e, c in state["history"]]
        self._evaluations = {int(e): v for e, v in state["evaluations"].items()}
        self._started = state.get("started", self._started)

    # -- helpers ----------------------------------------------------------------------------
    @staticmethod
    def _run_dir(trainer: L.Trainer) -> Path:
        return Path(trainer.default_root_dir)

    def _title(self, pl_module, what: str) -> str:
        return f"{what}\n{describe_loss(pl_module)}, {describe_mining(pl_module)}"

    # -- once per run ---------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        """A reused output directory must not mix an earlier run's epochs into this run's figures."""
        if self._started or not trainer.is_global_zero or getattr(pl_module, "resumed_from", None):
            return  # (a resumed run keeps the epochs before its checkpoint)
        self._started = True
        run_dir = self._run_dir(trainer)
        stale = [*(run_dir / artifacts.ANALYSIS_DIR).glob("*_epoch_*.pt"),
                 *(run_dir / artifacts.FIGURES_DIR).glob("*/epoch_*.png")]
        for path in stale:
            path.unlink()

    def on_fit_start(self, trainer: L.Trainer, pl_module) -> None:
        if not (self.gradient_field and trainer.is_global_zero):
            return
        loss = pl_module.criterion.loss
        if not getattr(loss, "needs_triplets", True):
            return  # pair / proxy losses have no field over (S_ap, S_an)
        from hardneg.analysis.gradient_field import write_gradient_field

        path = write_gradient_field(loss, artifacts.figure_path(self._run_dir(trainer), "gradient_field"))
        log_images(trainer, {"figures/gradient_field": path})

    # -- training triplets ------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module) -> None:
        # The share above the threshold is counted for every loss; its line is drawn for SCT only.
        self._counts = TripletCounts(self.bins, sct_threshold(pl_module, DEFAULT_SCT_THRESHOLD),
                                     sct=sct_threshold_of(pl_module.criterion.loss) is not None)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        stats = pl_module.last_train_stats
        if self._counts is None or stats is self._seen_stats or "points" not in stats:
            return
        self._seen_stats = stats
        self._counts.add(stats["points"], stats.get("bank_negative"))  # the flag: memory=xbm only

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        if self._counts is None:
            return
        counts = self._reduce_over_ranks(trainer, pl_module, self._counts)
        epoch = trainer.current_epoch + 1  # epochs completed, as the module counts them
        self._history.append((epoch, counts))
        if not trainer.is_global_zero:
            return
        run_dir = self._run_dir(trainer)
        artifacts.save_train_counts(run_dir, epoch, counts)
        images = {}
        if epoch % self.train_every_n_epochs == 0 or epoch == trainer.max_epochs:
            from hardneg.analysis.triplet_diagram import plot_train_diagram

            images["figures/train_triplets"] = plot_train_diagram(
                counts, artifacts.figure_path(run_dir, "train_triplets", epoch),
                self._title(pl_module, f"mined training triplets, epoch {epoch}"))
        log_images(trainer, images)

    def _draw_hn_ratio(self, trainer: L.Trainer, pl_module) -> Path | None:
        """The hn_ratio curve, redrawn at evaluations and at the end only: W&B already plots the
        train/hn_ratio scalar live, and redrawing it every epoch doubled this callback's cost per epoch."""
        if not (self._history and trainer.is_global_zero):
            return None
        from hardneg.analysis.curves import plot_hn_ratio

        return plot_hn_ratio(self._history, artifacts.figure_path(self._run_dir(trainer), "hn_ratio"),
                             self._title(pl_module, "mined training triplets"))

    def on_fit_end(self, trainer: L.Trainer, pl_module) -> None:
        path = self._draw_hn_ratio(trainer, pl_module)
        if path is not None:
            log_images(trainer, {"figures/hn_ratio": path})

    @staticmethod
    def _reduce_over_ranks(trainer: L.Trainer, pl_module, counts: TripletCounts) -> TripletCounts:
        """Sum every rank's histograms and counters when each rank mined its own anchors
        (``mining.scope=local``). With ``scope=global`` every rank's stats already hold the pooled
        triplets of all ranks (see ``Criterion``): summing would count each one world-size times.
        The bank part is summed too; it exists after the sum when any rank counted bank flags (one
        gather each for histograms and scalars, so every rank calls the same collectives)."""
        if trainer.world_size == 1 or getattr(pl_module.criterion.miner, "scope", "local") == "global":
            return counts
        bank = counts.bank or TripletCounts(counts.bins, counts.threshold, sct=counts.sct)
        numbers = lambda c: [c.count, c.hard, c.above_threshold, c.sum_ap, c.sum_an]  # noqa: E731
        scalars = torch.tensor([*numbers(counts), *numbers(bank), float(counts.bank is not None)],
                               dtype=torch.float64, device=pl_module.device)
        hists = pl_module.all_gather(torch.stack([counts.hist, bank.hist]).to(pl_module.device)).sum(0).cpu()
        total = pl_module.all_gather(scalars).sum(0).cpu().tolist()

        def summed(c: TripletCounts, hist, values) -> TripletCounts:
            return dataclasses.replace(c, hist=hist, count=int(values[0]), hard=int(values[1]),
                                       above_threshold=int(values[2]), sum_ap=values[3], sum_an=values[4], bank=None)

        reduced = summed(counts, hists[0], total[:5])
        if total[10] > 0:
            reduced.bank = summed(bank, hists[1], total[5:10])
        return reduced

    # -- test split -----------------------------------------------------------------------
    def on_evaluation(self, trainer: L.Trainer, pl_module, evaluation) -> None:
        """Called by the module after each evaluation with its ``hardneg.evaluation.Evaluation``
        (the whole test set, the same on every rank); only rank 0 writes."""
        if not trainer.is_global_zero:
            return
        epoch, run_dir = evaluation.epoch, self._run_dir(trainer)
        threshold = sct_threshold_of(pl_module.criterion.loss)  # None unless SCT: no line (also when redrawn)
        points, correct = evaluation.triplet_points()
        geometry = dict(evaluation.collapse)
        pl_module.summary.setdefault("test_geometry", {})[str(epoch)] = {
            **{k: round(v, 5) for k, v in geometry.items()}, "recall@1": evaluation.metrics.get("recall@1")}
        self._evaluations[epoch] = {"epoch": epoch, "geometry": geometry, "metrics": evaluation.metrics}
        artifacts.save_test_eval(run_dir, epoch, points, correct, geometry, evaluation.metrics, threshold)
        artifacts.save_embeddings(run_dir, epoch, evaluation.state(), self.keep_embeddings)

        from hardneg.analysis.curves import plot_collapse
        from hardneg.analysis.triplet_diagram import plot_test_diagram

        title = self._title(pl_module, f"test split, epoch {epoch}: best positive vs best negative per anchor")
        images = {
            "figures/test_triplets": plot_test_diagram(
                points, correct, artifacts.figure_path(run_dir, "test_triplets", epoch), title, threshold, self.bins),
            "figures/collapse": plot_collapse(
                list(self._evaluations.values()), artifacts.figure_path(run_dir, "collapse"),
                self._title(pl_module, "test embeddings"), self.collapse_threshold),
        }
        self._draw_hn_ratio(trainer, pl_module)
        log_images(trainer, images)
