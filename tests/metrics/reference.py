"""Brute-force references for the retrieval metrics: the full similarity matrix in float64 and
explicit Python loops over queries, written from the definitions (sharing no code with hardneg).

Ranking order: similarity descending, then reference index ascending.
"""

from __future__ import annotations

import math

import torch


def ranking(query, reference, exclude_self):
    """For each query, the list of (similarity, reference index) in ranking order."""
    sims = (query.double() @ reference.double().T).tolist()
    out = []
    for i, row in enumerate(sims):
        items = [(s, j) for j, s in enumerate(row) if not (exclude_self and j == i)]
        items.sort(key=lambda t: (-t[0], t[1]))
        out.append(items)
    return out


def knn(query, reference, k, exclude_self=False):
    rows = [r[:k] for r in ranking(query, reference, exclude_self)]
    return [[s for s, _ in r] for r in rows], [[j for _, j in r] for r in rows]


def metrics(query, query_labels, reference=None, reference_labels=None, ks=(1, 2, 4, 8)):
    """Recall@K over all queries (no positive = miss); MAP@R and R-Precision over queries with R > 0."""
    same = reference is None
    if same:
        reference, reference_labels = query, query_labels
    ql, rl = query_labels.tolist(), reference_labels.tolist()
    recall = {k: 0 for k in ks}
    ap_sum = rp_sum = 0.0
    n_defined = 0
    for i, items in enumerate(ranking(query, reference, same)):
        rel = [rl[j] == ql[i] for _, j in items]
        for k in ks:
            recall[k] += any(rel[:k])
        r = sum(rel)  # same-class references, the query itself excluded
        if r == 0:
            continue
        n_defined += 1
        hits, ap = 0, 0.0
        for pos in range(r):
            if rel[pos]:
                hits += 1
                ap += hits / (pos + 1)
        ap_sum += ap / r
        rp_sum += sum(rel[:r]) / r
    n = len(ql)
    out = {f"recall@{k}": recall[k] / n for k in ks}
    out["map@r"] = ap_sum / n_defined if n_defined else math.nan
    out["r_precision"] = rp_sum / n_defined if n_defined else math.nan
    return out


def tie_heavy(n, dim=4, seed=0):
    """Vectors with entries in {-1, 0, 1}: inner products are small exact integers, so float32 and
    float64 agree exactly and most similarities are tied."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(-1, 2, (n, dim), generator=gen).float()


def unit(n, dim, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, dim, generator=gen), dim=1)


def labels_with_sizes(sizes, seed=0):
    """Labels for classes of the given sizes, shuffled."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((s,), c) for c, s in enumerate(sizes)])
    return labels[torch.randperm(len(labels), generator=gen)]
