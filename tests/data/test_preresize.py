"""The one-time pre-resized copy: keyed by source and size, used automatically once complete."""
from __future__ import annotations

import pytest
from PIL import Image

from hardneg.data import preresize
from hardneg.data.cub import CUBDataModule
from hardneg.errors import UserError


def _dm(data, tmp_path, **kwargs):
    return CUBDataModule(root=str(data), preresized_dir=str(tmp_path / "pre"), **{"image_size": 16, **kwargs})


def test_copy_is_built_once_and_then_read(tmp_path, tiny_trees):
    data = tiny_trees.cub(tmp_path / "src")  # 40x30 images; 16 px training resizes to a 17 px shorter side
    target = preresize.build_copy(_dm(data, tmp_path), workers=1, log=lambda *a: None)
    assert target.name.startswith("cub-17px-") and preresize.is_complete(target)
    copied = target / "images" / "001.Bird_1" / "Bird_1_0.jpg"
    assert Image.open(copied).size == (22, 17)  # shorter side 17, aspect kept as torchvision's Resize
    dm = _dm(data, tmp_path)
    dm.setup()
    assert all(str(p).startswith(str(target)) for p in dm.splits.train.paths)
    assert dm.splits.train[0][0].shape == (3, 16, 16)
    # Another size or source is another copy; an existing one is not rebuilt.
    assert _dm(data, tmp_path, image_size=32).preresized_copy_dir(False) != target
    messages = []
    preresize.build_copy(_dm(data, tmp_path), workers=1, log=messages.append)
    assert messages == [f"already complete: {target}"]


def test_incomplete_copy_is_ignored_or_required(tmp_path, tiny_trees):
    data = tiny_trees.cub(tmp_path / "src")
    dm = _dm(data, tmp_path)
    dm.preresized_copy_dir(False).mkdir(parents=True)  # an interrupted run: no complete.json
    dm.setup()
    assert all(str(p).startswith(str(data)) for p in dm.splits.train.paths)
    with pytest.raises(UserError, match=r"data.use_preresized=true but .* python -m hardneg.data.preresize data=cub"):
        _dm(data, tmp_path, use_preresized=True).setup()
    never = _dm(data, tmp_path, use_preresized=False)
    preresize.build_copy(never, workers=1, log=lambda *a: None)
    never.setup()
    assert all(str(p).startswith(str(data)) for p in never.splits.train.paths)


def test_bbox_copy_holds_the_crops(tmp_path, tiny_trees):
    data = tiny_trees.cub(tmp_path / "src")  # boxes x=2 y=3 w=20 h=15
    target = preresize.build_copy(_dm(data, tmp_path, use_bbox=True), workers=1, log=lambda *a: None)
    assert target.name.startswith("cub-17px-bbox-")
    assert Image.open(target / "images" / "001.Bird_1" / "Bird_1_0.jpg").size == (20, 15)  # the 20x15 box, never upscaled
    dm = _dm(data, tmp_path, use_bbox=True)
    dm.setup()
    assert dm.splits.test.bboxes is None and str(dm.splits.test.paths[0]).startswith(str(target))


def test_command_line(tmp_path, tiny_trees, capsys):
    data = tiny_trees.cub(tmp_path / "src")
    args = ["data=cub", f"data.root={data}", "data.image_size=16", f"data.preresized_dir={tmp_path / 'pre'}"]
    assert preresize.main([*args, "--workers", "1"]) == 0
    assert "done:" in capsys.readouterr().out
    assert preresize.main([*args[:1], f"data.root={tmp_path / 'nowhere'}"]) == 2
    assert "not found" in capsys.readouterr().err


def test_copy_remembers_the_original_size(tmp_path):
    """A 500x375 photo's copy is 374x281; eval at 256 must still resize as the original would (341x256,
    not 340x256 from the copy's rounded size), so fast-on-copy stays close to reference-on-original."""
    import torch

    from hardneg.data.fast_images import FastPaperTransform
    from hardneg.data.transforms import paper_transform

    datasets = pytest.importorskip("sklearn.datasets")
    original, copy = tmp_path / "photo.jpg", tmp_path / "copy" / "photo.jpg"
    Image.fromarray(datasets.load_sample_images().images[0]).crop((0, 0, 500, 375)).save(original, quality=90)
    assert preresize._resize_one((str(original), str(copy), preresize.short_side(256), None)) is None
    assert Image.open(copy).size == (374, 281) and b"500x375" in Image.open(copy).info["comment"]
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    fast = FastPaperTransform(256, mean, std, train=False)
    x, width, height = fast.load(str(copy))
    assert tuple(x.shape) == (3, 281, 374) and (width, height) == (500, 375)  # sizes computed from 500x375
    a = paper_transform(256, mean, std, train=False)(Image.open(original).convert("RGB"))
    # Two resizes + JPEG q95 re-encoding: measured mean 1.7-3.3 uint8 levels on the sample photos.
    assert ((a - fast(str(copy))) * 0.25 * 255).abs().mean() <= 4.0
    torch.manual_seed(0)
    a = paper_transform(256, mean, std, train=True)(Image.open(original).convert("RGB"))
    torch.manual_seed(0)
    b = FastPaperTransform(256, mean, std, train=True)(str(copy))
    assert ((a - b) * 0.25 * 255).abs().mean() <= 4.0
