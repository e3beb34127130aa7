"""Named testbeds: the overrides a study applies to every run (experiments/testbed/README.md).

A testbed is a fixed setting (data, model, schedule, callbacks) in which the methods are
compared; the methods then differ only by ``experiment=<method>``. Kept as override lists,
not a config group, so that every study run is an ordinary ``python -m hardneg.run`` whose
exact command line the study writes down.
"""
from __future__ import annotations

# Every study run: no W&B, the collapse detector only records (hn runs to the end, as the
# issue asks, and its stop epoch would be recorded if it were set to stop), figures that the
# study redraws across runs are not drawn per epoch.
COMMON = [
    "logger=none",
    "callbacks.collapse.action=continue",
    "callbacks.progress_bar=null",
    "trainer.enable_progress_bar=false",
    "callbacks.retrieval_examples=null",
    "callbacks.triplet_space.train_every_n_epochs=10",
]

TESTBEDS: dict[str, list[str]] = {
    # The repository's default: a linear head on cached frozen EfficientNet-Lite0 features.
    "head": ["model=efficientnet_lite0"],
    # Last stage + conv head + linear head trained on cached early-stage feature maps.
    "split": [
        "model=efficientnet_lite0_split",
        "model.train_stages=2",
        "trainer.max_epochs=30",
        "optim.scheduler.milestones=[20]",
    ],
}

METHODS = ["hn", "shn", "sct", "margin", "multi_similarity", "proxy_anchor", "contrastive"]
PAPER_METHODS = ("hn", "shn", "sct")


def overrides(testbed: str) -> list[str]:
    if testbed not in TESTBEDS:
        raise KeyError(testbed)
    return [*COMMON, *TESTBEDS[testbed]]
