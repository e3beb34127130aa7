"""One evaluation of the test split, computed once and the same on every process.

Every process embeds its shard of the test set (``EmbeddingBuffer.add``); ``gather`` collects all
shards on every rank, drops the duplicates that ``DistributedSampler`` adds to even out the
shards and puts the rows in dataset order, so what follows equals one process evaluating the
whole set. ``evaluate_embeddings`` then makes the ``Evaluation``: one ranking pass
(``hardneg.metrics.rank``) gives the metrics and each query's best positive / best negative,
and the collapse statistics are computed once. The module logs its metrics and hands it to
every callback that defines ``on_evaluation(trainer, module, evaluation)``; decisions taken
from it (e.g. stopping on collapse) are therefore the same on every rank.

Non-finite embeddings (a NaN/inf row) stop the evaluation with a message naming them, or, with
``eval.nonfinite=drop``, are left out and counted (``Evaluation.dropped``).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor

from hardneg import distributed
from hardneg.analysis.collapse import collapse_stats
from hardneg.errors import ConfigError, UserError
from hardneg.metrics import Ranking, check_ks, metrics_from_ranking, nmi_kmeans, rank
from hardneg.metrics.ranking import count_positives

NONFINITE_POLICIES = ("error", "drop")


class NonFiniteEmbeddingsError(UserError):
    """Some test embeddings are NaN or inf and the run asked to stop on them."""


@dataclass(frozen=True)
class Evaluation:
    """Everything one evaluation found, for every item of the test split, in dataset order.

    embeddings, labels, indices: ``[N, D]``, ``[N]``, ``[N]`` (dataset index of each row); rows
        dropped for non-finite values are not among them.
    is_query: ``[N]`` bool for query/gallery datasets (In-Shop), else None (leave-one-out).
    ranking: the references ranked for each query row (``query_rows``); its indices are rows of
        the reference set (``reference_rows``).
    metrics: Recall@K, MAP@R, R-Precision (and NMI if asked), floats.
    collapse: ``hardneg.analysis.collapse.collapse_stats`` of all embeddings.
    dropped: dataset indices of the rows left out for non-finite values.
    """

    epoch: int
    embeddings: Tensor
    labels: Tensor
    indices: Tensor
    is_query: Tensor | None
    ranking: Ranking
    metrics: dict[str, float]
    collapse: dict[str, float]
    dropped: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))

    @property
    def query_rows(self) -> Tensor:
        n = len(self.labels)
        return torch.arange(n) if self.is_query is None else self.is_query.nonzero().flatten()

    @property
    def reference_rows(self) -> Tensor:
        n = len(self.labels)
        return torch.arange(n) if self.is_query is None else (~self.is_query).nonzero().flatten()

    def triplet_points(self) -> tuple[Tensor, Tensor]:
        """(points [Q, 2] = (best positive, best negative) similarity, nearest neighbour correct [Q])
        for every query that has both a positive and a negative: the test triplet diagram."""
        points = torch.stack([self.ranking.best_positive, self.ranking.best_negative], dim=1).cpu()
        points = points[torch.isfinite(points).all(dim=1)]
        return points, points[:, 0] > points[:, 1]

    def neighbours(self, query_rows: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """(rows [Q, k] of the nearest references, same class [Q, k]) for some query rows."""
        position = torch.full((len(self.labels),), -1, dtype=torch.long)
        position[self.query_rows] = torch.arange(len(self.query_rows))
        at = position[query_rows.cpu()]
        if (at < 0).any():
            raise ValueError("neighbours() takes query rows; some rows given are gallery items")
        if k > self.ranking.k:
            raise ValueError(f"only the {self.ranking.k} nearest neighbours were kept; asked for {k}")
        rows = self.reference_rows[self.ranking.indices[at, :k].cpu()]
        return rows, self.labels[rows] == self.labels[query_rows][:, None]

    def state(self) -> dict:
        """What ``hardneg.analyze`` keeps: plain tensors and numbers."""
        return {"epoch": self.epoch, "embeddings": self.embeddings, "labels": self.labels, "indices": self.indices,
                "is_query": self.is_query, "metrics": dict(self.metrics), "collapse": dict(self.collapse),
                "dropped": self.dropped}


class EmbeddingBuffer:
    """Collects one process's test embeddings, labels and dataset indices during an evaluation."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self._parts: list[tuple[Tensor, Tensor, Tensor]] = []

    def add(self, embeddings: Tensor, labels: Tensor, indices: Tensor) -> None:
        n = embeddings.shape[0]
        if embeddings.dim() != 2 or labels.shape != (n,) or indices.shape != (n,):
            raise ValueError(
                f"expected embeddings [N, D], labels [N] and dataset indices [N]; got "
                f"{tuple(embeddings.shape)}, {tuple(labels.shape)}, {tuple(indices.shape)}"
            )
        self._parts.append((embeddings.detach(), labels.detach().long(), indices.detach().long()))

    def gather(self) -> tuple[Tensor, Tensor, Tensor]:
        """(embeddings, labels, dataset indices) of every process, one row per dataset index, in
        dataset order. A collective under DDP: every rank must call it. Embeddings travel as
        float64 together with labels and indices (exact for ids below 2**53), in one gather."""
        if not self._parts:
            raise ValueError("nothing to evaluate: no test batch was embedded (is the test split empty?)")
        emb = torch.cat([p[0] for p in self._parts])
        packed = torch.cat([emb.double(), torch.cat([p[1] for p in self._parts]).double()[:, None],
                            torch.cat([p[2] for p in self._parts]).double()[:, None]], dim=1)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            packed = distributed.gather_uneven(packed)
        indices = packed[:, -1].long()
        unique, inverse = torch.unique(indices, sorted=True, return_inverse=True)
        # The first occurrence of each dataset index (the sampler's padding repeats some).
        first = torch.full((len(unique),), len(indices), dtype=torch.long, device=indices.device)
        first = first.scatter_reduce(0, inverse, torch.arange(len(indices), device=indices.device), reduce="amin")
        packed = packed[first]
        return packed[:, :-2].to(emb.dtype), packed[:, -2].long(), unique


def split_nonfinite(embeddings: Tensor, indices: Tensor, policy: str) -> Tensor:
    """Rows to keep (bool [N]); raises ``NonFiniteEmbeddingsError`` under ``policy="error"``."""
    if policy not in NONFINITE_POLICIES:
        raise ConfigError(f"eval.nonfinite={policy!r} is unknown; choose one of {list(NONFINITE_POLICIES)}")
    finite = torch.isfinite(embeddings).all(dim=1)
    bad = (~finite).nonzero().flatten()
    if len(bad) and policy == "error":
        shown = ", ".join(str(int(i)) for i in indices[bad[:10]])
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise NonFiniteEmbeddingsError(
            f"{len(bad)} of {len(embeddings)} test embeddings contain NaN or inf (test-set indices {shown}{more}). "
            "The weights may have diverged (lower optim.optimizer.lr) or these inputs are corrupt. "
            "Set eval.nonfinite=drop to evaluate without them (they are counted)."
        )
    return finite


@torch.no_grad()
def evaluate_embeddings(
    embeddings: Tensor,
    labels: Tensor,
    indices: Tensor | None = None,
    is_query: Tensor | None = None,
    *,
    epoch: int = 0,
    ks: Iterable[int] = (1, 2, 4, 8),
    map_at_r: bool = True,
    r_precision: bool = True,
    nmi: bool = False,
    nonfinite: str = "error",
    neighbours: int = 10,
    chunk_size: int = 4096,
) -> Evaluation:
    """The ``Evaluation`` of a whole test set (already gathered, one row per item).

    Leave-one-out when ``is_query`` is None, else the queries search the gallery. ``neighbours``:
    at least this many nearest references are kept per query (for retrieval examples); MAP@R
    needs the top R, which is kept anyway.
    """
    n = len(embeddings)
    indices = torch.arange(n) if indices is None else indices
    keep = split_nonfinite(embeddings, indices, nonfinite)
    dropped = indices[~keep].cpu()
    embeddings, labels, indices = embeddings[keep], labels[keep], indices[keep]
    if is_query is not None:
        is_query = is_query.to(keep.device).bool()[keep].cpu()
        if not is_query.any() or is_query.all():
            raise UserError(f"query/gallery evaluation needs both; got {int(is_query.sum())} queries of "
                            f"{len(is_query)} items")
        q_rows = is_query.to(embeddings.device)
        query, query_labels = embeddings[q_rows], labels[q_rows]
        reference, reference_labels = embeddings[~q_rows], labels[~q_rows]
        available = len(reference)
    else:
        query, query_labels, reference, reference_labels = embeddings, labels, None, None
        available = len(embeddings) - 1
    if len(query) == 0 or available <= 0:
        raise UserError(f"retrieval needs queries and references; got {len(embeddings)} usable test items")
    ks = check_ks(ks, available)
    # One pass: keep the top R + 1 (MAP@R, the best negative) or ``neighbours``, whichever is more.
    r = count_positives(query_labels, labels if reference_labels is None else reference_labels, is_query is None)
    k = max(int(r.max()) + 1, neighbours)
    ranking = rank(query, query_labels, reference, reference_labels, k=k, rank_limit=max(ks, default=1),
                   chunk_size=chunk_size)
    rl = labels if reference_labels is None else reference_labels
    metrics = metrics_from_ranking(ranking, query_labels, rl, ks, map_at_r, r_precision)
    if nmi:
        metrics["nmi"] = nmi_kmeans(query.float(), query_labels, chunk_size=chunk_size)
    if len(dropped):
        metrics["nonfinite_dropped"] = float(len(dropped))
    return Evaluation(
        epoch=epoch, embeddings=embeddings.cpu(), labels=labels.cpu(), indices=indices.cpu(), is_query=is_query,
        ranking=_to_cpu(ranking), metrics=metrics, collapse=collapse_stats(embeddings), dropped=dropped,
    )


def _to_cpu(ranking: Ranking) -> Ranking:
    fields = {name: getattr(ranking, name) for name in ranking.__dataclass_fields__}
    return Ranking(**{k: v.cpu() if isinstance(v, Tensor) else v for k, v in fields.items()})
