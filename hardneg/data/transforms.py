"""Image transforms: the paper's recipe (default) or timm's, from a backbone's pretrained config.

Paper (official code): train Resize(1.1 x size) -> RandomCrop(size) -> horizontal flip;
eval Resize(size) -> CenterCrop(size); then ToTensor and Normalize with per-dataset
statistics. ``Resize`` with an int scales the *shorter* side, as in the official code.
"""
from __future__ import annotations

from torchvision import transforms as T

from hardneg.errors import ConfigError

# Per-dataset RGB mean / std of the official code (docs/method.md, "The official training recipe").
DATASET_STATS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "cub": ((0.4707, 0.4601, 0.4549), (0.2767, 0.2760, 0.2850)),
    "cars": ((0.4853, 0.4965, 0.4295), (0.2237, 0.2193, 0.2568)),
    "sop": ((0.5807, 0.5396, 0.5044), (0.2901, 0.2974, 0.3095)),
    "inshop": ((0.8324, 0.8109, 0.8041), (0.2206, 0.2378, 0.2444)),
    "hotels50k": ((0.5838, 0.5146, 0.4470), (0.6298, 0.6112, 0.4445)),
}

TRANSFORM_KINDS = ("paper", "timm")


def paper_transform(image_size: int, mean, std, train: bool) -> T.Compose:
    if train:
        resize = [T.Resize(int(1.1 * image_size)), T.RandomCrop(image_size), T.RandomHorizontalFlip()]
    else:
        resize = [T.Resize(image_size), T.CenterCrop(image_size)]
    return T.Compose([*resize, T.ToTensor(), T.Normalize(list(mean), list(std))])


def timm_transform(model_name: str, image_size: int, train: bool):
    """timm's train/eval pipeline at ``image_size`` with the backbone's own mean, std, crop_pct and
    interpolation. Reads the pretrained config only: no model is built and nothing is downloaded."""
    import timm
    import timm.data

    try:
        pretrained_cfg = timm.models.get_pretrained_cfg(model_name)
    except Exception:  # timm raises different errors across versions for unknown names
        pretrained_cfg = None
    if pretrained_cfg is None:
        raise ConfigError(
            f"data.timm_model={model_name!r} has no pretrained config in timm; "
            f"use a timm model name such as 'resnet50' (see timm.list_models(pretrained=True))"
        )
    data_cfg = timm.data.resolve_data_config(
        {"input_size": (3, image_size, image_size)}, pretrained_cfg=pretrained_cfg.to_dict()
    )
    return timm.data.create_transform(**data_cfg, is_training=train)


def build_transform(kind: str, train: bool, image_size: int, mean=None, std=None, timm_model: str | None = None):
    if kind not in TRANSFORM_KINDS:
        raise ConfigError(f"data.transform={kind!r} is unknown; choose one of {list(TRANSFORM_KINDS)}")
    if int(image_size) <= 0:
        raise ConfigError(f"data.image_size must be a positive number of pixels, got {image_size}")
    if kind == "timm":
        if not timm_model:
            raise ConfigError("data.transform=timm needs data.timm_model, the timm name of the backbone")
        return timm_transform(timm_model, int(image_size), train)
    for key, value in (("mean", mean), ("std", std)):
        if value is None or len(value) != 3:
            raise ConfigError(f"data.{key} must list 3 numbers (R, G, B), got {value}")
    return paper_transform(int(image_size), tuple(float(m) for m in mean), tuple(float(s) for s in std), train)
