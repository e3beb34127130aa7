"""Contrastive pair loss vs a brute-force loop over all pairs."""
from __future__ import annotations

import pytest
import torch
from bruteforce import contrastive, scenarios

from hardneg.losses import ContrastiveLoss

from .pairs import check_against_brute_force

SCENARIOS = scenarios(seed=3)
SETTINGS = [{}, {"reduction": "mean"}, {"pos_margin": 0.7, "neg_margin": 0.1}]


@pytest.mark.parametrize("params", SETTINGS)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_value_and_gradient_equal_brute_force(scenario, params):
    loss, _ = check_against_brute_force(
        ContrastiveLoss(**params), lambda *x: contrastive(*x, **params), scenario)
    if scenario.name == "all_distinct_labels" and params.get("neg_margin", 0.5) >= 1:
        assert loss.item() == 0.0


def test_by_hand():
    # 2-D: e0 = (1,0) and e1 = (0,1) same class (s = 0), e2 = (.6,.8) other class: s02 = .6, s12 = .8
    # pos pairs (0,1), (1,0): relu(1 - 0) = 1 each; neg pairs (0,2),(2,0): relu(.6-.5) = .1, (1,2),(2,1): .3
    # nonzero means: 1 + (.1 + .1 + .3 + .3) / 4 = 1.2
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=torch.float64)
    from hardneg.criterion import Criterion

    loss, stats = Criterion(ContrastiveLoss())(e, torch.tensor([0, 0, 1]))
    assert loss.item() == pytest.approx(1.2, abs=1e-12)
    assert stats["active_pos_pairs"].item() == 2 and stats["active_neg_pairs"].item() == 4


def test_invalid_reduction_names_the_key():
    with pytest.raises(ValueError, match="loss.reduction"):
        ContrastiveLoss(reduction="sum")
