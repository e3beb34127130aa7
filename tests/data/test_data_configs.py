"""conf/data/<benchmark>.yaml compose with the real config and carry the paper's settings."""
from __future__ import annotations

import pytest
from hydra.utils import instantiate

from hardneg.data.transforms import DATASET_STATS

PAPER = {  # batch, sampler, repeat, recall_ks
    "cub": (128, "filled", 1, [1, 2, 4, 8]),
    "cars": (128, "filled", 1, [1, 2, 4, 8]),
    "sop": (512, "sampled", 5, [1, 10, 100, 1000]),
    "inshop": (512, "sampled", 5, [1, 10, 20, 30, 40, 50]),
    "hotels50k": (512, "sampled", 5, [1, 10, 100]),
}


@pytest.mark.parametrize("name", list(PAPER))
def test_paper_settings(make_cfg, name):
    cfg = make_cfg([f"data={name}", "seed=7"], fast=False)
    batch, sampler, repeat, ks = PAPER[name]
    data = cfg.data
    assert (data.batch_size, data.samples_per_class, data.sampler, data.repeat) == (batch, 2, sampler, repeat)
    assert list(data.recall_ks) == ks and data.seed == 7 and data.image_size == 256 and data.root is None
    assert (tuple(data.mean), tuple(data.std)) == DATASET_STATS[name]
    glyph_keys = set(make_cfg(["data=glyphs"], fast=False).data)
    shared = {"_target_", "image_size", "mean", "std", "batch_size", "samples_per_class", "sampler", "repeat",
              "eval_batch_size", "num_workers", "seed", "recall_ks"}
    assert shared <= glyph_keys and shared <= set(data)


@pytest.mark.parametrize("name", list(PAPER))
def test_instantiates_with_timm_transform_of_the_backbone(make_cfg, name):
    dm = instantiate(make_cfg([f"data={name}", "data.transform=timm", "model=resnet18"], fast=False).data)
    assert "Normalize(mean=tensor([0.4850, 0.4560, 0.4060])" in repr(dm.eval_transform)  # resnet18's, not the dataset's
    assert dm.name == name and dm.recall_ks == tuple(PAPER[name][3])
