"""The configurable miner object that Hydra builds from ``conf/mining/*.yaml``."""
from __future__ import annotations

import importlib

from torch import Tensor

from hardneg.mining.negatives import NEGATIVE_STRATEGIES
from hardneg.mining.positives import POSITIVE_STRATEGIES
from hardneg.mining.triplets import DUPLICATE_SIMILARITY, Triplets, check_strategies, mine_triplets

SCOPES = ("global", "local")


def _import_strategy(name: str, registry: dict) -> None:
    """A strategy outside hardneg, named by its import path (``mining.neg=my_pkg.module.fn``):
    import it and register it under that name, so a project can add one without editing hardneg."""
    if name in registry or "." not in name:
        return
    module, _, attr = name.rpartition(".")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"mining strategy {name!r}: cannot import {attr!r} from {module!r} ({err})") from err
    registry[name] = fn


class TripletMiner:
    """Positive strategy x negative strategy over the step's similarity matrix.

    ``pos`` / ``neg`` name a registered strategy (``hardneg/mining/positives.py``,
    ``negatives.py``) or a function's import path. ``scope`` says which references the anchors
    are mined against under DDP: ``global`` (all ranks' embeddings, gathered with gradients:
    exactly one device on the whole batch) or ``local`` (this rank's shard only, what per-GPU
    miners do).
    """

    def __init__(
        self,
        pos: str = "easy",
        neg: str = "hardest",
        scope: str = "global",
        duplicate_threshold: float = DUPLICATE_SIMILARITY,
    ):
        _import_strategy(pos, POSITIVE_STRATEGIES)
        _import_strategy(neg, NEGATIVE_STRATEGIES)
        check_strategies(pos, neg)
        if scope not in SCOPES:
            raise ValueError(f"mining.scope={scope!r} is unknown; choose one of {list(SCOPES)}")
        self.pos, self.neg, self.scope = pos, neg, scope
        self.duplicate_threshold = duplicate_threshold

    def __call__(
        self, sim: Tensor, anchor_labels: Tensor, ref_labels: Tensor, self_index=None, inplace: bool = False
    ) -> Triplets:
        """``inplace``: ``sim`` may serve as scratch space (restored before returning)."""
        return mine_triplets(
            sim, anchor_labels, ref_labels, self_index,
            pos=self.pos, neg=self.neg, duplicate_threshold=self.duplicate_threshold, inplace=inplace,
        )

    def __repr__(self) -> str:
        return f"TripletMiner(pos={self.pos}, neg={self.neg}, scope={self.scope})"
