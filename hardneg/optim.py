"""Optimiser parameter groups: backbone, head and loss parameters (proxies) at their own LRs.

    optim.param_groups.backbone_lr_multiplier  backbone LR = optimiser LR x this (fine-tuning a
                                               pretrained transformer usually wants 0.1 or less)
    optim.param_groups.layer_decay             layer-wise LR decay (BEiT/DINOv2 fine-tuning):
                                               backbone layer i of n trains at LR x decay**(n-1-i)
                                               (timm's layer grouping), on top of the multiplier
    optim.param_groups.proxy_lr_multiplier     LR multiplier of the loss's own parameters (the
                                               proxies of proxy-anchor); null: the loss's own
                                               ``lr_multiplier`` (proxy-anchor's paper: 100)

The head always trains at the optimiser's LR. With the defaults (1, null, null) the groups are
the project's historical ones: the whole network at the LR, the loss parameters at the loss's
multiplier. Weight decay is the optimiser's, unchanged, in every group.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from hardneg.errors import ConfigError


def _trainable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def layer_lr_scales(backbone: nn.Module, decay: float) -> list[tuple[float, list[nn.Parameter]]]:
    """(LR scale, parameters) per backbone layer, deepest layer at 1.0 (timm's grouping)."""
    from timm.optim import param_groups_layer_decay

    by_scale: dict[float, list[nn.Parameter]] = {}
    for group in param_groups_layer_decay(backbone, weight_decay=0.0, layer_decay=decay):
        by_scale.setdefault(float(group["lr_scale"]), []).extend(group["params"])
    return sorted(by_scale.items())


def param_groups(
    net: nn.Module,
    criterion: nn.Module | None = None,
    backbone_lr_multiplier: float = 1.0,
    layer_decay: float | None = None,
    proxy_lr_multiplier: float | None = None,
) -> list[dict]:
    """Parameter groups with a ``lr_multiplier`` and a ``name`` each (empty groups dropped)."""
    if backbone_lr_multiplier < 0:
        raise ConfigError(f"optim.param_groups.backbone_lr_multiplier must be >= 0, got {backbone_lr_multiplier}")
    if layer_decay is not None and not 0 < layer_decay <= 1:
        raise ConfigError(f"optim.param_groups.layer_decay must be in (0, 1] or null, got {layer_decay}")
    backbone = getattr(net, "backbone", None)
    if backbone is None and (backbone_lr_multiplier != 1.0 or layer_decay is not None):
        raise ConfigError(f"{type(net).__name__} has no .backbone: backbone_lr_multiplier/layer_decay need one")
    groups = []
    if backbone is not None:
        if layer_decay is None:
            groups.append({"name": "backbone", "params": _trainable(backbone), "lr_multiplier": backbone_lr_multiplier})
        else:
            for i, (scale, params) in enumerate(layer_lr_scales(backbone, layer_decay)):
                groups.append({"name": f"backbone.{i}", "params": params,
                               "lr_multiplier": backbone_lr_multiplier * scale})
        in_backbone = {id(p) for p in backbone.parameters()}
        rest = [p for p in _trainable(net) if id(p) not in in_backbone]
        groups.append({"name": "head", "params": rest, "lr_multiplier": 1.0})
    else:
        groups.append({"name": "net", "params": _trainable(net), "lr_multiplier": 1.0})
    if criterion is not None:
        loss = getattr(criterion, "loss", criterion)
        scale = proxy_lr_multiplier if proxy_lr_multiplier is not None else getattr(loss, "lr_multiplier", 1.0)
        groups.append({"name": "loss", "params": _trainable(criterion), "lr_multiplier": float(scale)})
    return [g for g in groups if g["params"]]


def build_optimizer(factory: Callable[..., torch.optim.Optimizer], net: nn.Module, criterion: nn.Module | None = None,
                    **options) -> torch.optim.Optimizer:
    """``factory(groups)`` (e.g. a partial ``torch.optim.AdamW``), then each group's LR times its
    multiplier. The multiplier stays in the group as ``lr_multiplier`` (and its ``name``), so a
    scheduler that rescales LRs keeps the ratios."""
    groups = param_groups(net, criterion, **options)
    optimizer = factory([{"params": g["params"]} for g in groups])
    for group, spec in zip(optimizer.param_groups, groups):
        group["lr"] = group["lr"] * spec["lr_multiplier"]
        group["lr_multiplier"] = spec["lr_multiplier"]
        group["name"] = spec["name"]
    return optimizer
