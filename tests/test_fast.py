"""hardneg/_fast.py equals the readable definitions: same triplets, same loss, same gradients.

The fast path runs on its own only for large matrices (``_fast.MIN_ENTRIES``); the fixture
``fast_everywhere`` lowers that threshold to 0 so that the brute-force scenarios, with their
corner cases (duplicates, singletons, ties), run through it too.
"""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from bruteforce import assert_close, scenarios

from hardneg import _fast
from hardneg.criterion import Criterion
from hardneg.losses import MarginTripletLoss, NCALoss, SCTLoss
from hardneg.mining import TripletMiner
from hardneg.mining.triplets import reference_triplets

FAST_POS = ["easy", "hard", "all"]
FAST_NEG = ["hardest", "semihard", "easy"]
GRID = list(itertools.product(FAST_POS, FAST_NEG))


@pytest.fixture
def fast_everywhere(monkeypatch):
    monkeypatch.setattr(_fast, "MIN_ENTRIES", 0)


def _tied_batch(n=300, classes=37):
    """2-D embeddings on 12 angles: many exact ties; n x n = 90,000 entries, above MIN_ENTRIES."""
    angles = torch.arange(n) % 12 * (2 * torch.pi / 12)
    return torch.stack([torch.cos(angles), torch.sin(angles)], 1), torch.arange(n) % classes


# ----------------------------------------------------------------------------- mining
def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("pos,neg", GRID)
def test_fast_mining_equals_the_definition_on_every_scenario(pos, neg, fast_everywhere):
    for scenario in scenarios(seed=1):
        anchors, labels, refs, ref_labels, self_index = scenario.inputs()
        sim = (anchors @ refs.T).detach()
        for index in (self_index, None):
            expected = reference_triplets(sim, labels, ref_labels, index, pos, neg)
            assert _fast.supports(pos, neg, sim)
            for inplace in (False, True):
                scratch = sim.clone()
                got = _fast.mine(scratch, labels, ref_labels, index, pos, neg, 0.9999, inplace=inplace)
                assert _same(got, expected), (scenario.name, inplace)
                assert torch.equal(scratch, sim)  # the scratch space is restored bit for bit


@pytest.mark.parametrize("pos,neg", GRID)
def test_fast_mining_equals_the_definition_on_a_large_batch_with_ties(pos, neg):
    e, labels = _tied_batch()
    sim = e @ e.T
    assert _fast.supports(pos, neg, sim)  # without any patching: the size that takes the fast path
    expected = reference_triplets(sim, labels, labels, torch.arange(len(e)), pos, neg)
    got = _fast.mine(sim.T.contiguous().T, labels, labels, torch.arange(len(e)), pos, neg, 0.9999, inplace=True)
    assert _same(got, expected)


def test_random_strategies_and_small_matrices_use_the_definition():
    big = torch.zeros(300, 300)
    assert not _fast.supports("random", "hardest", big) and not _fast.supports("easy", "random", big)
    assert not _fast.supports("easy", "hardest", torch.zeros(128, 128))
    assert _fast.supports("easy", "hardest", big)


def test_chunked_negatives_equal_one_chunk(monkeypatch):
    """Row chunks (which bound the temporaries' memory) do not change any choice."""
    g = torch.Generator().manual_seed(0)
    sim = torch.randn(40, 70, generator=g)
    sim[sim > 1.5] = float("-inf")  # same-class entries
    anchor = torch.randint(0, 40, (90,), generator=g)  # repeated anchors, as with pos=all
    s_ap = torch.rand(90, generator=g)
    cases = [(anchor, s_ap), (torch.arange(40), s_ap[:40])]  # gathered rows; all rows in order (views)
    whole = [f(sim, a, s) for f in _fast._NEGATIVE.values() for a, s in cases]
    monkeypatch.setattr(_fast, "CHUNK_ELEMENTS", 3 * 70)  # 3 rows per chunk
    chunked = [f(sim, a, s) for f in _fast._NEGATIVE.values() for a, s in cases]
    for (cols, found), (chunked_cols, chunked_found) in zip(whole, chunked):
        assert torch.equal(chunked_found, found) and torch.equal(chunked_cols[found], cols[found])


def test_same_class_pairs_lists_every_pair_in_row_major_order():
    rows, cols = _fast.same_class_pairs(torch.tensor([2, 0, 7]), torch.tensor([0, 2, 2, 5, 0, 2]))
    assert list(zip(rows.tolist(), cols.tolist())) == [(0, 1), (0, 2), (0, 5), (1, 0), (1, 4)]


@pytest.mark.parametrize("cols", [5, 64, 65, 97, 130])
@pytest.mark.parametrize("block", [4, 32])
def test_blocked_row_argmax_equals_torch_including_ties_and_infinities(cols, block):
    g = torch.Generator().manual_seed(cols)
    x = torch.randint(-3, 4, (40, cols), generator=g).float()  # many ties per row
    x[0] = float("-inf")  # a row with no candidate
    x[1] = float("inf")
    x[2, -1] = 10.0  # the best in the remainder columns
    x[3, 0] = -10.0
    x[4, ::7] = float("-inf")
    for ours, reference in ((_fast.row_max, torch.max), (_fast.row_min, torch.min)):
        values, index = ours(x, block=block)
        expected = reference(x, dim=1)
        assert torch.equal(values, expected.values) and torch.equal(index, expected.indices)


# ----------------------------------------------------------------------------- loss + gradient
LOSSES = {"sct": SCTLoss, "nca": NCALoss, "margin": lambda: MarginTripletLoss(0.2, "euclidean", "nonzero")}


def _loss_and_grad(criterion, x, labels):
    x = x.clone().requires_grad_()
    loss, stats = criterion(F.normalize(x, dim=1), labels)
    loss.backward()
    return loss.detach(), x.grad, stats["points"]


@pytest.mark.parametrize("loss_name", list(LOSSES))
@pytest.mark.parametrize("pos,neg", [("easy", "hardest"), ("easy", "semihard"), ("all", "easy"), ("hard", "hardest")])
def test_sparse_backward_path_equals_dense_autograd(loss_name, pos, neg, monkeypatch):
    """The same criterion at a size that takes the fast path, against the dense definition path."""
    g = torch.Generator().manual_seed(4)
    x, labels = torch.randn(260, 16, generator=g, dtype=torch.float64), torch.arange(260) // 4
    criterion = Criterion(LOSSES[loss_name](), TripletMiner(pos, neg))
    fast = _loss_and_grad(criterion, x, labels)
    monkeypatch.setattr(_fast, "MIN_ENTRIES", float("inf"))  # everything through the definitions
    dense = _loss_and_grad(criterion, x, labels)
    assert torch.equal(fast[2], dense[2])  # same triplets, same (S_ap, S_an)
    assert_close(fast[0], dense[0])
    assert_close(fast[1], dense[1])


def test_pick_similarities_on_separate_anchors_and_references():
    g = torch.Generator().manual_seed(3)
    anchors = torch.randn(5, 4, dtype=torch.float64, generator=g, requires_grad=True)
    refs = torch.randn(7, 4, dtype=torch.float64, generator=g, requires_grad=True)
    rows, cols = torch.tensor([0, 0, 3, 4, 4]), torch.tensor([6, 1, 1, 0, 0])  # a repeated pair on purpose
    weights = torch.randn(5, dtype=torch.float64, generator=g)
    sim = anchors.detach() @ refs.detach().T
    picked = _fast.pick_similarities(sim, anchors, refs, rows, cols)
    assert torch.equal(picked, sim[rows, cols])
    (picked * weights).sum().backward()
    got = anchors.grad.clone(), refs.grad.clone()
    anchors.grad = refs.grad = None
    ((anchors @ refs.T)[rows, cols] * weights).sum().backward()
    assert_close(got[0], anchors.grad)
    assert_close(got[1], refs.grad)
