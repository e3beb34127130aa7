"""The fast ranking (block maxima, ``_chunks``) equals the definition (sort every row), and the
definition equals brute force, ties included."""
import math

import pytest
import torch

from hardneg.metrics import rank

from . import reference as ref

FIELDS = ("similarities", "indices", "first_positive", "best_positive", "best_negative", "num_positives")


def assert_same_ranking(a, b):
    assert a.rank_limit == b.rank_limit
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        if name in ("first_positive",):  # exact below the limit; beyond it only ">= limit" counts
            x, y = x.clamp(max=a.rank_limit), y.clamp(max=a.rank_limit)
        if x.is_floating_point():  # the fast path multiplies in fixed-shape blocks: last-bit rounding may differ
            torch.testing.assert_close(x, y, atol=1e-6, rtol=0, msg=name)
        else:
            assert torch.equal(x, y), name


def brute_force(query, labels, reference=None, reference_labels=None):
    """Per query: (first positive position, best positive, best negative) from the Python ranking."""
    same = reference is None
    rl = (labels if same else reference_labels).tolist()
    out = []
    for i, items in enumerate(ref.ranking(query, query if same else reference, same)):
        rel = [rl[j] == int(labels[i]) for _, j in items]
        first = rel.index(True) if any(rel) else None
        pos = max((s for (s, _), r in zip(items, rel) if r), default=-math.inf)
        neg = max((s for (s, _), r in zip(items, rel) if not r), default=-math.inf)
        out.append((first, pos, neg))
    return out


CASES = {
    "random": lambda: (ref.unit(130, 8, seed=1), ref.labels_with_sizes([1, 2, 3, 5, 8, 13] * 5, seed=1)[:130]),
    "ties": lambda: (ref.tie_heavy(97, dim=3, seed=2), ref.labels_with_sizes([1, 2, 4, 7, 20, 30, 33], seed=2)),
    "one_class": lambda: (ref.unit(60, 4, seed=3), torch.zeros(60, dtype=torch.long)),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("gallery", [False, True])
@pytest.mark.parametrize("limit", [None, 3])
def test_fast_equals_the_definition(blocks, case, gallery, limit):
    x, labels = CASES[case]()
    args = (x[:40], labels[:40], x[40:], labels[40:]) if gallery else (x, labels)
    want = rank(*args, rank_limit=limit, chunk_size=16, fast=False)
    got = rank(*args, rank_limit=limit, chunk_size=16, fast=True)
    assert_same_ranking(got, want)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("gallery", [False, True])
def test_definition_equals_brute_force(case, gallery):
    x, labels = CASES[case]()
    args = (x[:40], labels[:40], x[40:], labels[40:]) if gallery else (x, labels)
    got = rank(*args, chunk_size=16, fast=False)
    want = brute_force(*args)
    for i, (first, pos, neg) in enumerate(want):
        assert int(got.first_positive[i]) == (first if first is not None else got.rank_limit), i
        assert float(got.best_positive[i]) == pytest.approx(pos, abs=1e-6)
        assert float(got.best_negative[i]) == pytest.approx(neg, abs=1e-6)
    # The default k keeps R + 1 neighbours: enough for MAP@R, and always the best negative.
    assert got.k == min(int(got.num_positives.max()) + 1, len(args[2] if gallery else x) - (not gallery))


def test_a_short_top_list_still_finds_the_best_negative():
    """k below R + 1: the top list holds only positives, the best negative comes from the row."""
    x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 0, 1])
    for fast in (False, True):
        got = rank(x, labels, k=1, fast=fast)
        assert got.best_negative[0] == pytest.approx(0.0) and got.indices[0].tolist() == [1]
        assert got.best_negative[3] == pytest.approx(0.2) and math.isinf(got.best_positive[3])


def test_float64_stays_float64():
    x = ref.unit(30, 5).double()
    got = rank(x, torch.arange(30) % 3)
    assert got.similarities.dtype == torch.float64 and got.best_positive.dtype == torch.float64
