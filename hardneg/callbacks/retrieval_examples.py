"""RetrievalExamplesCallback: after each evaluation, a grid of fixed test queries and their
top-k results (green: same class), saved under figures/retrieval/ and logged to W&B.

The neighbours come from the evaluation's ranking (``Evaluation.neighbours``); the module keeps
at least ``neighbours_needed`` of them per query. Only the pictures are fetched from the
datamodule's test split, by dataset index.
"""
from __future__ import annotations

import lightning as L

from hardneg.analysis import artifacts
from hardneg.callbacks.publish import log_images


class RetrievalExamplesCallback(L.Callback):
    def __init__(self, num_queries: int = 6, top_k: int = 5, seed: int = 0):
        if num_queries < 1 or top_k < 1:
            raise ValueError("callbacks.retrieval_examples: num_queries and top_k must be >= 1")
        self.num_queries, self.top_k, self.seed = num_queries, top_k, seed
        self._queries = None  # rows chosen at the first evaluation, kept for every later one

    def state_dict(self) -> dict:
        return {"queries": self._queries}

    def load_state_dict(self, state: dict) -> None:
        self._queries = state["queries"]

    @property
    def neighbours_needed(self) -> int:
        """How many nearest neighbours per query the evaluation must keep for this callback."""
        return self.top_k

    def on_evaluation(self, trainer: L.Trainer, pl_module, evaluation) -> None:
        if not trainer.is_global_zero:
            return
        from hardneg.analysis.retrieval_examples import image_test_set, pick_queries, write_retrieval_grid

        datamodule = trainer.datamodule
        dataset = image_test_set(datamodule)
        if dataset is None:  # no images to show (e.g. a feature-only dataset)
            return
        if self._queries is None:
            self._queries = pick_queries(evaluation.labels, self.num_queries, self.seed, evaluation.is_query)
        if len(self._queries) == 0:
            return
        class_names = (getattr(datamodule, "class_names", None) or {}).get("test")
        epoch = evaluation.epoch
        path = write_retrieval_grid(
            dataset, evaluation, artifacts.figure_path(trainer.default_root_dir, "retrieval", epoch), self._queries,
            self.top_k, getattr(datamodule, "mean", None), getattr(datamodule, "std", None), class_names,
            f"epoch {epoch}: queries (left) and top-{self.top_k} results, green = same class",
        )
        log_images(trainer, {"figures/retrieval": path})
