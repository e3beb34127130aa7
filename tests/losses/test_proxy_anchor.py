"""Proxy-Anchor loss vs a brute-force loop over proxies; proxies are trained parameters."""
from __future__ import annotations

import math

import pytest
import torch
from bruteforce import proxy_anchor, scenarios

from hardneg.criterion import Criterion
from hardneg.losses import ProxyAnchorLoss

from .pairs import check_against_brute_force

SCENARIOS = scenarios(seed=5)


@pytest.mark.parametrize("params", [{}, {"margin": 0.3, "alpha": 4.0}])
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_value_and_gradient_equal_brute_force(scenario, params):
    num_classes = int(scenario.ref_labels.max()) + 3  # some proxies without a sample in the batch
    torch.manual_seed(0)
    loss = ProxyAnchorLoss(num_classes, scenario.refs.shape[1], **params).double()
    check_against_brute_force(
        loss,
        lambda anchors, labels, refs, ref_labels, self_index: proxy_anchor(refs, ref_labels, loss.proxies, **params),
        scenario,
        extra_leaves=(loss.proxies,),
    )


def test_by_hand():
    # one sample x = (1, 0) of class 0; proxies p0 = (1, 0), p1 = (0, 1): s(x,p0) = 1, s(x,p1) = 0
    # P+ = {p0}: log(1 + e^{-a(1 - m)});  negatives: p0 none (0), p1: log(1 + e^{a(0 + m)}), / |P| = 2
    loss = ProxyAnchorLoss(2, 2, margin=0.1, alpha=32.0).double()
    with torch.no_grad():
        loss.proxies.copy_(torch.tensor([[1.0, 0.0], [0.0, 3.0]]))  # norms do not matter
    value, stats = Criterion(loss)(torch.tensor([[1.0, 0.0]], dtype=torch.float64), torch.tensor([0]))
    expected = math.log1p(math.exp(-28.8)) + math.log1p(math.exp(3.2)) / 2
    assert value.item() == pytest.approx(expected, abs=1e-12)
    assert stats["proxies_in_batch"].item() == 1


def test_proxies_are_parameters_that_an_optimiser_moves():
    torch.manual_seed(0)
    loss = ProxyAnchorLoss(num_classes=4, dim=3)
    assert [n for n, _ in loss.named_parameters()] == ["proxies"] and loss.lr_multiplier == 100
    opt = torch.optim.SGD([{"params": loss.parameters(), "lr": 0.01 * loss.lr_multiplier}])
    e = torch.nn.functional.normalize(torch.randn(8, 3), dim=1)
    labels = torch.arange(8) % 4
    before = loss.proxies.detach().clone()
    first, _ = Criterion(loss)(e, labels)
    for _ in range(20):
        opt.zero_grad()
        value, _ = Criterion(loss)(e, labels)
        value.backward()
        opt.step()
    assert not torch.equal(before, loss.proxies) and value.item() < first.item()


def test_labels_outside_num_classes_are_rejected_with_the_key():
    loss = ProxyAnchorLoss(num_classes=3, dim=2)
    with pytest.raises(ValueError, match="loss.num_classes"):
        Criterion(loss)(torch.eye(2), torch.tensor([0, 3]))


@pytest.mark.parametrize("kwargs,key", [({"num_classes": 0, "dim": 2}, "loss.num_classes"),
                                        ({"num_classes": "???", "dim": 2}, "loss.num_classes"),
                                        ({"num_classes": 3, "dim": None}, "loss.dim")])
def test_invalid_sizes_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        ProxyAnchorLoss(**kwargs)
