from __future__ import annotations

import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from hardneg.data.transforms import DATASET_STATS, build_transform
from hardneg.errors import ConfigError


def test_paper_pipeline():
    train = build_transform("paper", True, 256, *DATASET_STATS["cub"])
    kinds = [type(t) for t in train.transforms]
    assert kinds == [T.Resize, T.RandomCrop, T.RandomHorizontalFlip, T.ToTensor, T.Normalize]
    assert train.transforms[0].size == 281 and train.transforms[1].size == (256, 256)
    evaluation = build_transform("paper", False, 256, *DATASET_STATS["cub"])
    assert [type(t) for t in evaluation.transforms] == [T.Resize, T.CenterCrop, T.ToTensor, T.Normalize]
    assert evaluation.transforms[-1].mean == [0.4707, 0.4601, 0.4549]
    x = evaluation(Image.new("RGB", (50, 30), (120, 117, 116)))
    assert x.shape == (3, 256, 256)


def test_stats_for_every_benchmark():
    assert set(DATASET_STATS) == {"cub", "cars", "sop", "inshop", "hotels50k"}
    assert DATASET_STATS["hotels50k"] == ((0.5838, 0.5146, 0.4470), (0.6298, 0.6112, 0.4445))


def test_timm_option_uses_backbone_config():
    train = build_transform("timm", True, 64, timm_model="tf_efficientnet_lite0")
    evaluation = build_transform("timm", False, 64, timm_model="tf_efficientnet_lite0")
    x = evaluation(Image.new("RGB", (80, 70)))
    assert x.shape == (3, 64, 64) and torch.allclose(x, torch.full_like(x, -1.0))  # mean = std = 0.5
    assert train(Image.new("RGB", (80, 70))).shape == (3, 64, 64)


@pytest.mark.parametrize("kwargs, match", [
    (dict(kind="fancy"), r"data.transform='fancy' is unknown; choose one of \['paper', 'timm'\]"),
    (dict(kind="timm"), "needs data.timm_model"),
    (dict(kind="timm", timm_model="no_such_net"), "data.timm_model='no_such_net'"),
    (dict(kind="paper", mean=(0.5, 0.5)), "data.mean must list 3 numbers"),
    (dict(kind="paper", image_size=0), "data.image_size must be a positive"),
])
def test_bad_settings(kwargs, match):
    options = dict(image_size=32, mean=(0.5,) * 3, std=(0.5,) * 3) | kwargs
    with pytest.raises(ConfigError, match=match):
        build_transform(options.pop("kind"), True, **options)
