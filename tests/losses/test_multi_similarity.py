"""Multi-Similarity loss and its pair mining vs the authors' per-anchor loop."""
from __future__ import annotations

import math

import pytest
import torch
from bruteforce import multi_similarity, scenarios

from hardneg.criterion import Criterion
from hardneg.losses import MultiSimilarityLoss

from .pairs import check_against_brute_force

SCENARIOS = scenarios(seed=4)
SETTINGS = [{}, {"alpha": 1.0, "beta": 10.0, "base": 0.2, "margin": 0.5}, {"margin": 0.0}]


@pytest.mark.parametrize("params", SETTINGS)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_value_and_gradient_equal_brute_force(scenario, params):
    loss, _ = check_against_brute_force(
        MultiSimilarityLoss(**params), lambda *x: multi_similarity(*x, **params), scenario)
    if scenario.name in ("all_same_label", "all_distinct_labels", "only_duplicates"):
        assert loss.item() == 0.0


def test_by_hand():
    # 2-D: e0 = (1,0), e1 = (.6,.8) class 0; e2 = (.8,.6) class 1. s01 = .6, s02 = .8, s12 = .96
    # anchor 0: pos {.6}, neg {.8}: neg kept (.8 + .1 > .6), pos kept (.6 - .1 < .8)
    #   1/2 log(1 + e^{-2(.6-.5)}) + 1/50 log(1 + e^{50(.8-.5)})
    # anchor 1: pos {.6}, neg {.96}: both kept: 1/2 log(1 + e^{-.2}) + 1/50 log(1 + e^{23})
    # anchor 2: no positive -> 0; the mean is over all 3 anchors
    e = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6]], dtype=torch.float64)
    expected = (2 * 0.5 * math.log1p(math.exp(-0.2)) + math.log1p(math.exp(15)) / 50
                + math.log1p(math.exp(23)) / 50) / 3
    loss, stats = Criterion(MultiSimilarityLoss())(e, torch.tensor([0, 0, 1]))
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    assert stats["ms_valid_anchors"].item() == 2


def test_pair_mining_drops_easy_pairs():
    # anchor 0: pos .9 and .2; negs .3 and -.5.  neg kept iff s + .1 > min pos (.2): .3 only;
    # pos kept iff s - .1 < max neg (.3): .2 only.
    e = torch.tensor([[1.0, 0.0], [0.9, math.sqrt(1 - 0.81)], [0.2, math.sqrt(1 - 0.04)],
                      [0.3, -math.sqrt(1 - 0.09)], [-0.5, math.sqrt(0.75)]], dtype=torch.float64)
    loss, _ = Criterion(MultiSimilarityLoss())(e[:1], torch.tensor([0]), e, torch.tensor([0, 0, 0, 1, 1]),
                                              torch.tensor([0]))
    expected = 0.5 * math.log1p(math.exp(-2 * (0.2 - 0.5))) + math.log1p(math.exp(50 * (0.3 - 0.5))) / 50
    assert loss.item() == pytest.approx(expected, abs=1e-12)


def test_large_scales_stay_finite():
    e = torch.nn.functional.normalize(torch.randn(8, 3, dtype=torch.float32), dim=1).requires_grad_()
    loss, _ = Criterion(MultiSimilarityLoss(beta=5000.0))(e, torch.arange(8) % 2)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(e.grad).all()


def test_invalid_scales_name_the_keys():
    with pytest.raises(ValueError, match="loss.alpha"):
        MultiSimilarityLoss(alpha=0)
