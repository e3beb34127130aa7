"""Optimiser parameter groups: backbone / head / proxies at their own LRs, layer-wise decay."""
from __future__ import annotations

import functools

import pytest
import torch

from hardneg.criterion import Criterion
from hardneg.errors import ConfigError
from hardneg.losses import ProxyAnchorLoss, SCTLoss
from hardneg.models import EmbeddingNet
from hardneg.module import MetricLearningModule
from hardneg.optim import build_optimizer, param_groups

LR = 0.01
ADAMW = functools.partial(torch.optim.AdamW, lr=LR, weight_decay=1e-4)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return EmbeddingNet("test_resnet", dim=8, pretrained=False)


def lr_of(optimizer) -> dict[int, float]:
    return {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}


def test_defaults_keep_the_network_at_the_lr_and_proxies_at_the_losss_multiplier(net):
    criterion = Criterion(ProxyAnchorLoss(num_classes=5, dim=8))  # lr_multiplier 100, its paper's
    opt = build_optimizer(ADAMW, net, criterion)
    lrs = lr_of(opt)
    assert all(lrs[id(p)] == LR for p in net.parameters())
    assert lrs[id(criterion.loss.proxies)] == pytest.approx(100 * LR)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(net.parameters())) + 1  # each once
    assert [g["name"] for g in opt.param_groups] == ["backbone", "head", "loss"]


def test_lower_backbone_lr_and_proxy_override(net):
    criterion = Criterion(ProxyAnchorLoss(num_classes=5, dim=8))
    opt = build_optimizer(ADAMW, net, criterion, backbone_lr_multiplier=0.1, proxy_lr_multiplier=10)
    lrs = lr_of(opt)
    assert all(lrs[id(p)] == pytest.approx(0.1 * LR) for p in net.backbone.parameters())
    assert all(lrs[id(p)] == LR for p in net.head.parameters())
    assert lrs[id(criterion.loss.proxies)] == pytest.approx(10 * LR)
    assert all(g["weight_decay"] == 1e-4 for g in opt.param_groups)  # the optimiser's, untouched


def test_layer_decay_scales_each_backbone_layer_geometrically(net):
    decay = 0.5
    groups = param_groups(net, None, backbone_lr_multiplier=0.2, layer_decay=decay)
    backbone = [g for g in groups if g["name"].startswith("backbone")]
    scales = [g["lr_multiplier"] / 0.2 for g in backbone]
    assert len(backbone) > 2 and scales[-1] == pytest.approx(1.0)  # the deepest layer at the multiplier
    for shallow, deep in zip(scales, scales[1:]):
        assert shallow == pytest.approx(deep * decay)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in net.parameters())  # every parameter exactly once
    stem = next(net.backbone.parameters())  # the first layer
    assert next(g["lr_multiplier"] for g in backbone if any(p is stem for p in g["params"])) == pytest.approx(
        0.2 * scales[0])


def test_frozen_backbone_has_no_group_and_the_scheduler_keeps_ratios():
    net = EmbeddingNet("test_resnet", dim=8, pretrained=False, freeze_backbone=True)
    assert [g["name"] for g in param_groups(net, Criterion(SCTLoss()))] == ["head"]
    net = EmbeddingNet("test_resnet", dim=8, pretrained=False)
    opt = build_optimizer(functools.partial(torch.optim.SGD, lr=LR), net, backbone_lr_multiplier=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    opt.step()
    scheduler.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05 * LR, 0.5 * LR])


@pytest.mark.parametrize("options, match", [({"backbone_lr_multiplier": -1}, "backbone_lr_multiplier"),
                                            ({"layer_decay": 1.5}, "layer_decay"),
                                            ({"layer_decay": 0}, "layer_decay")])
def test_bad_options_are_named(net, options, match):
    with pytest.raises(ConfigError, match=match):
        param_groups(net, None, **options)


def test_module_passes_the_configured_groups_to_the_optimiser(net):
    module = MetricLearningModule(net, Criterion(SCTLoss()), optimizer=ADAMW,
                                  param_groups={"backbone_lr_multiplier": 0.1})
    opt = module.configure_optimizers()
    assert {g["name"]: g["lr"] for g in opt.param_groups} == pytest.approx({"backbone": 0.1 * LR, "head": LR})


def test_adamw_preset_composes_into_these_groups():
    from hardneg.config import compose

    cfg = compose(["optim=adamw", "loss=proxy_anchor"])
    assert cfg.optim.optimizer.lr == pytest.approx(1e-4) and cfg.optim.param_groups.proxy_lr_multiplier is None
    assert cfg.loss.lr_multiplier == 100  # proxy-anchor's paper: proxies at 100x the LR
