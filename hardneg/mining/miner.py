"""The configurable miner object that Hydra builds from ``conf/mining/*.yaml``."""
from __future__ import annotations

from torch import Tensor

from hardneg.mining.negatives import NEGATIVE_STRATEGIES
from hardneg.mining.positives import POSITIVE_STRATEGIES
from hardneg.mining.triplets import DUPLICATE_SIMILARITY, Triplets, mine_triplets

SCOPES = ("global", "local")


class TripletMiner:
    """Positive strategy x negative strategy over the step's similarity matrix.

    ``scope`` says which references the anchors are mined against under DDP: ``global``
    (all ranks' embeddings, gathered with gradients: exactly one device on the whole batch)
    or ``local`` (this rank's shard only, what per-GPU miners do).
    """

    def __init__(
        self,
        pos: str = "easy",
        neg: str = "hardest",
        scope: str = "global",
        duplicate_threshold: float = DUPLICATE_SIMILARITY,
    ):
        if pos not in POSITIVE_STRATEGIES:
            raise ValueError(f"mining.pos={pos!r} is unknown; choose one of {sorted(POSITIVE_STRATEGIES)}")
        if neg not in NEGATIVE_STRATEGIES:
            raise ValueError(f"mining.neg={neg!r} is unknown; choose one of {sorted(NEGATIVE_STRATEGIES)}")
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
