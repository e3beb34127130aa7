"""mine_triplets / TripletMiner against the brute-force definitions, for the full grid."""
from __future__ import annotations

import itertools

import pytest
import torch
from bruteforce import DUPLICATE, check_mined, scenarios

from hardneg.mining import TripletMiner, mine_triplets

POS = ["easy", "hard", "random", "all"]
NEG = ["hardest", "semihard", "easy", "random"]
SCENARIOS = scenarios(seed=1)


def _as_list(t):
    return list(zip(t.anchor.tolist(), t.positive.tolist(), t.negative.tolist()))


@pytest.mark.parametrize("pos,neg", list(itertools.product(POS, NEG)))
def test_mined_triplets_equal_the_definitions(pos, neg):
    for scenario in SCENARIOS:
        anchors, labels, refs, ref_labels, self_index = scenario.inputs()
        sim = (anchors @ refs.T).detach()
        for seed in range(3 if "random" in (pos, neg) else 1):
            g = torch.Generator().manual_seed(seed)
            t = mine_triplets(sim, labels, ref_labels, self_index, pos=pos, neg=neg, generator=g)
            check_mined(_as_list(t), sim, labels, ref_labels, self_index, pos, neg)
            assert t.num_anchors == len(anchors)
            if len(t):
                assert (sim[t.anchor, t.positive] < DUPLICATE).all(), scenario.name
                assert (labels[t.anchor] == ref_labels[t.positive]).all()
                assert (labels[t.anchor] != ref_labels[t.negative]).all()
                assert (t.positive != self_index[t.anchor]).all()


@pytest.mark.parametrize("pos,neg", list(itertools.product(POS, NEG)))
def test_anchors_not_among_the_references(pos, neg):
    """self_index=None (e.g. a memory bank): every same-class reference may be a positive."""
    g = torch.Generator().manual_seed(2)
    anchors = torch.nn.functional.normalize(torch.randn(6, 3, generator=g, dtype=torch.float64), dim=1)
    refs = torch.nn.functional.normalize(torch.randn(9, 3, generator=g, dtype=torch.float64), dim=1)
    labels, ref_labels = torch.tensor([0, 1, 2, 0, 1, 5]), torch.arange(9) % 3
    sim = anchors @ refs.T
    t = mine_triplets(sim, labels, ref_labels, None, pos=pos, neg=neg, generator=g)
    check_mined(_as_list(t), sim, labels, ref_labels, None, pos, neg)


@pytest.mark.parametrize("pos,neg", [(p, n) for p in ("easy", "hard", "all") for n in ("hardest", "semihard", "easy")])
def test_a_ddp_rank_mines_exactly_its_rows_of_the_global_batch(pos, neg):
    """Anchors = refs[4:10] with self_index offset 4 give the rows 4..9 of one-device mining."""
    scenario = next(s for s in SCENARIOS if s.name == "ddp_slice")
    refs, ref_labels = scenario.refs.detach(), scenario.ref_labels
    full = mine_triplets(refs @ refs.T, ref_labels, ref_labels, torch.arange(16), pos=pos, neg=neg)
    rank = mine_triplets(refs[4:10] @ refs.T, ref_labels[4:10], ref_labels, torch.arange(4, 10), pos=pos, neg=neg)
    expected = [(a - 4, p, n) for a, p, n in _as_list(full) if 4 <= a < 10]
    assert _as_list(rank) == expected and len(expected) > 0


def test_mining_returns_indices_without_gradient():
    scenario = SCENARIOS[0]
    sim = scenario.refs @ scenario.refs.T
    assert sim.requires_grad
    t = TripletMiner()(sim, scenario.ref_labels, scenario.ref_labels, torch.arange(len(sim)))
    assert t.anchor.dtype == t.positive.dtype == t.negative.dtype == torch.long
    assert not any(x.requires_grad for x in (t.anchor, t.positive, t.negative))


def test_duplicate_threshold_is_configurable():
    sim = torch.tensor([[1.0, 0.95, 0.9, 0.1], [0.95, 1.0, 0.8, 0.2]])
    labels, ref_labels = torch.tensor([0, 0]), torch.tensor([0, 0, 0, 1])
    t = TripletMiner("easy", "hardest", duplicate_threshold=0.93)(sim, labels, ref_labels, torch.arange(2))
    assert t.positive.tolist() == [2, 2]  # 0.95 counts as a duplicate now
    t = TripletMiner("easy", "hardest")(sim, labels, ref_labels, torch.arange(2))
    assert t.positive.tolist() == [1, 0]


@pytest.mark.parametrize("key,kwargs", [("mining.pos", {"pos": "eazy"}), ("mining.neg", {"neg": "hard"}),
                                        ("mining.scope", {"scope": "world"})])
def test_invalid_configuration_names_the_key_and_the_choices(key, kwargs):
    with pytest.raises(ValueError, match=key) as err:
        TripletMiner(**kwargs)
    assert "choose one of" in str(err.value)


@pytest.mark.parametrize("pos,neg", list(itertools.product(POS, NEG)))
def test_inplace_mining_restores_the_matrix_bit_for_bit_and_mines_the_same(pos, neg):
    for scenario in SCENARIOS:
        anchors, labels, refs, ref_labels, self_index = scenario.inputs()
        sim = (anchors @ refs.T).detach()
        scratch = sim.clone()
        a = mine_triplets(sim, labels, ref_labels, self_index, pos=pos, neg=neg,
                          generator=torch.Generator().manual_seed(0))
        b = mine_triplets(scratch, labels, ref_labels, self_index, pos=pos, neg=neg,
                          generator=torch.Generator().manual_seed(0), inplace=True)
        assert torch.equal(scratch, sim), scenario.name
        assert _as_list(a) == _as_list(b), scenario.name


@pytest.mark.parametrize("pos,neg", list(itertools.product(POS, NEG)))
def test_a_wide_batch_with_many_ties(pos, neg):
    """M = 100 > 2 blocks of the fast row-wise argmax; 2-D embeddings on 12 angles: many exact ties."""
    angles = torch.arange(100) % 12 * (2 * torch.pi / 12)
    e = torch.stack([torch.cos(angles), torch.sin(angles)], 1).double()
    labels = torch.arange(100) % 7
    sim = e @ e.T
    for seed in range(2 if "random" in (pos, neg) else 1):
        g = torch.Generator().manual_seed(seed)
        t = mine_triplets(sim, labels, labels, torch.arange(100), pos=pos, neg=neg, generator=g)
        check_mined(_as_list(t), sim, labels, labels, torch.arange(100), pos, neg)


def test_a_non_contiguous_matrix_is_mined_like_its_contiguous_copy():
    scenario = SCENARIOS[0]
    refs, labels = scenario.refs.detach(), scenario.ref_labels
    sim_t = (refs @ refs.T).T  # a transposed view
    for inplace in (False, True):
        before = sim_t.clone()
        a = mine_triplets(sim_t, labels, labels, torch.arange(len(labels)), inplace=inplace)
        b = mine_triplets(sim_t.contiguous(), labels, labels, torch.arange(len(labels)))
        assert _as_list(a) == _as_list(b) and torch.equal(sim_t, before)
