from __future__ import annotations

import shutil

import pytest
import torch

from hardneg.data.cub import CUBDataModule
from hardneg.errors import DatasetNotFoundError, UserError

SMALL = dict(image_size=32, batch_size=4)


def build(root, **kwargs):
    dm = CUBDataModule(root=str(root), **{**SMALL, **kwargs})
    dm.setup()
    return dm


def test_split_by_class_id_halves(tmp_path, tiny_trees):
    data = tiny_trees.cub(tmp_path)
    dm = build(data)
    train, test = dm.splits.train, dm.splits.test
    assert len(train) == 3 + 2 + 4 + 1 and len(test) == 3 + 2 + 1 + 2
    assert {int(str(p).split("/images/")[1][:3]) for p in train.paths} == {1, 2, 3, 4}
    assert {int(str(p).split("/images/")[1][:3]) for p in test.paths} == {5, 6, 7, 8}
    # labels contiguous from 0 in each split; the singleton classes (4 and 7) are kept
    assert train.labels.unique().tolist() == [0, 1, 2, 3]
    assert test.labels.unique().tolist() == [0, 1, 2, 3]
    assert (test.labels == 2).sum() == 1
    x, label, index = test[5]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and (label, index) == (int(test.labels[5]), 5)
    assert dm.protocol == "loo" and dm.recall_ks == (1, 2, 4, 8)


def test_bbox_crop(tmp_path, tiny_trees):
    data = tiny_trees.cub(tmp_path)
    dm = build(data, use_bbox=True)
    assert dm.splits.test.load(0).size == (20, 15)  # box x=2 y=3 w=20 h=15
    assert build(data).splits.test.load(0).size == (40, 30)


@pytest.mark.parametrize("where", ["dataset", "parent", "child"])
def test_root_at_any_unambiguous_level(tmp_path, tiny_trees, where):
    data = tiny_trees.cub(tmp_path / "cub")
    root = {"dataset": data, "parent": data.parent, "child": data / "images"}[where]
    assert build(root).dataset_dir() == data


def test_two_candidates_are_ambiguous(tmp_path, tiny_trees):
    data = tiny_trees.cub(tmp_path / "cub")
    shutil.copytree(data, tmp_path / "cub" / "CUB_copy")
    with pytest.raises(DatasetNotFoundError, match="several candidate directories.*CUB_200_2011.*CUB_copy"):
        build(tmp_path / "cub")


def test_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("HARDNEG_DATA", str(tmp_path))
    assert CUBDataModule().root == tmp_path / "cub"
    monkeypatch.delenv("HARDNEG_DATA")
    assert str(CUBDataModule().root).endswith("data/cub")


def test_missing_root_names_dir_files_and_download(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        build(tmp_path / "nowhere")
    message = str(err.value)
    for part in ("does not exist", str(tmp_path / "nowhere"), "images.txt", "image_class_labels.txt",
                 "python -m hardneg.data.download cub --root", "HARDNEG_DATA"):
        assert part in message


def test_root_without_dataset(tmp_path):
    (tmp_path / "empty" / "other").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="hold any of images.txt"):
        build(tmp_path / "empty")


def test_missing_annotation(tmp_path, tiny_trees):
    data = tiny_trees.cub(tmp_path)
    (data / "image_class_labels.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match="image_class_labels.txt is missing"):
        build(data)


def test_truncated_annotation(tmp_path, tiny_trees):
    data = tiny_trees.cub(tmp_path)
    labels = data / "image_class_labels.txt"
    labels.write_text("\n".join(labels.read_text().splitlines()[:-3]) + "\n")
    with pytest.raises(UserError, match="image_class_labels.txt: its image ids do not match images.txt"):
        build(data)


def test_line_cut_mid_way(tmp_path, tiny_trees):
    data = tiny_trees.cub(tmp_path)
    labels = data / "image_class_labels.txt"
    labels.write_text(labels.read_text().rstrip("\n").rsplit(" ", 1)[0] + "\n")
    with pytest.raises(UserError, match=r"line 18 has 1 fields, expected 2.*truncated"):
        build(data)


def test_truncated_classes_file(tmp_path, tiny_trees):
    data = tiny_trees.cub(tmp_path)
    classes = data / "classes.txt"
    classes.write_text("\n".join(classes.read_text().splitlines()[:5]) + "\n")
    with pytest.raises(UserError, match=r"classes.txt: lacks class ids \[6, 7, 8\]"):
        build(data)


def test_bbox_file_missing_only_matters_with_bbox(tmp_path, tiny_trees):
    data = tiny_trees.cub(tmp_path)
    (data / "bounding_boxes.txt").unlink()
    build(data)
    with pytest.raises(DatasetNotFoundError, match="bounding_boxes.txt is missing"):
        build(data, use_bbox=True)


def test_listed_image_absent(tmp_path, tiny_trees):
    data = tiny_trees.cub(tmp_path)
    (data / "images" / "006.Bird_6" / "Bird_6_1.jpg").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"test images listed in the annotations but absent: 1 of 8 .*Bird_6_1.jpg"):
        build(data)


def test_fingerprint_tracks_eval_inputs(tmp_path, tiny_trees):
    data = tiny_trees.cub(tmp_path)
    a, b = build(data), build(data)
    assert a.fingerprint() == b.fingerprint()
    assert build(data, image_size=48).fingerprint() != a.fingerprint()
    assert build(data, use_bbox=True).fingerprint() != a.fingerprint()
