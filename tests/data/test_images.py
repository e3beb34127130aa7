from __future__ import annotations

import warnings

import pytest
import torch

from hardneg.data.cub import CUBDataModule
from hardneg.data.images import CorruptImageWarning, ImageListDataset
from hardneg.data.transforms import paper_transform
from hardneg.errors import ConfigError, UserError


def _corrupt(path, how):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3] if how == "truncated" else b"not an image at all")


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_skip_substitutes_grey_and_counts(tmp_path, tiny_trees, how):
    paths = [tmp_path / f"{i}.jpg" for i in range(4)]
    for i, p in enumerate(paths):
        tiny_trees.jpeg(p, i)
    _corrupt(paths[1], how)
    _corrupt(paths[3], how)
    ds = ImageListDataset(paths, [0, 0, 1, 1], transform=paper_transform(16, (0.5,) * 3, (0.5,) * 3, train=False))
    with pytest.warns(CorruptImageWarning, match=r"\(1 so far\): .*1\.jpg"):
        x, label, index = ds[1]
    assert x.shape == (3, 16, 16) and (label, index) == (0, 1)
    assert torch.allclose(x, torch.full_like(x, 128 / 255 * 2 - 1), atol=1e-6)  # grey, not another image
    with pytest.warns(CorruptImageWarning, match=r"\(2 so far\): .*3\.jpg"):
        ds[3]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds[1]  # warned once per file
        ds[0]
    assert ds.corrupt == {str(paths[1]), str(paths[3])}


def test_error_names_the_file(tmp_path, tiny_trees):
    path = tmp_path / "bad.jpg"
    tiny_trees.jpeg(path, 0)
    _corrupt(path, "truncated")
    ds = ImageListDataset([path], [0], on_corrupt="error")
    with pytest.raises(UserError, match=r"cannot read image .*bad.jpg.*data.on_corrupt=skip"):
        ds[0]


def test_corrupt_image_in_a_benchmark(tmp_path, tiny_trees):
    data = tiny_trees.cub(tmp_path)
    _corrupt(data / "images" / "005.Bird_5" / "Bird_5_0.jpg", "truncated")
    dm = CUBDataModule(root=str(data), image_size=32)
    dm.setup()
    with pytest.warns(CorruptImageWarning, match="Bird_5_0.jpg"):
        batch = next(iter(dm.test_dataloader()))
    assert batch[0].shape == (8, 3, 32, 32)
    strict = CUBDataModule(root=str(data), image_size=32, on_corrupt="error")
    strict.setup()
    with pytest.raises(UserError, match="Bird_5_0.jpg"):
        next(iter(strict.test_dataloader()))


def test_bad_on_corrupt_value():
    with pytest.raises(ConfigError, match=r"data.on_corrupt='ignore' is unknown; choose one of \['skip', 'error'\]"):
        CUBDataModule(on_corrupt="ignore")


def test_box_clamped_to_image(tmp_path, tiny_trees):
    path = tmp_path / "a.jpg"
    tiny_trees.jpeg(path, 0, size=(40, 30))
    ds = ImageListDataset([path, path], [0, 0], bboxes=[(-5, -5, 100, 100), (39.6, 29.6, 39.7, 29.8)])
    assert ds.load(0).size == (40, 30)
    assert ds.load(1).size == (1, 1)


def test_with_transform_is_a_view(tmp_path, tiny_trees):
    path = tmp_path / "a.jpg"
    tiny_trees.jpeg(path, 0)
    ds = ImageListDataset([path], [3])
    view = ds.with_transform(paper_transform(8, (0.5,) * 3, (0.5,) * 3, train=False))
    assert ds.transform is None and view[0][0].shape == (3, 8, 8) and view.labels is ds.labels


def test_corrupt_count_reaches_the_main_process_from_workers(tmp_path, tiny_trees):
    """Workers substitute; the datamodule still counts every distinct grey image (for results.json)."""
    data = tiny_trees.cub(tmp_path)
    bad = [data / "images" / "005.Bird_5" / "Bird_5_0.jpg", data / "images" / "008.Bird_8" / "Bird_8_1.jpg"]
    for path in bad:
        _corrupt(path, "garbage")
    dm = CUBDataModule(root=str(data), image_size=16, eval_batch_size=2, num_workers=2)
    dm.setup()
    assert dm.corrupt_image_count() == 0
    for _ in range(2):  # a second pass re-reads the same files: still 2 distinct images
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CorruptImageWarning)
            list(dm.test_dataloader())
    assert dm.corrupt_image_count() == 2
    assert sorted(dm.splits.test.corrupt_paths()) == sorted(str(p) for p in bad)


def test_corrupt_warning_prints_a_plain_path(tmp_path, tiny_trees):
    path = tmp_path / "bad.jpg"
    tiny_trees.jpeg(path, 0)
    _corrupt(path, "garbage")
    with pytest.warns(CorruptImageWarning) as record:
        ImageListDataset([path], [0])[0]
    message = str(record[0].message)
    assert f": {path} (" in message and "np.str_" not in message
