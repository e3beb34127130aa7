from __future__ import annotations

import pytest

from hardneg.data.hotels50k import Hotels50KDataModule
from hardneg.errors import ConfigError, DatasetNotFoundError, UserError


def build(root, **kwargs):
    dm = Hotels50KDataModule(root=str(root), image_size=32, batch_size=4, **kwargs)
    with pytest.warns(UserWarning, match=r"1 of 12 training images .* not under images/train"):
        dm.setup()
    return dm


def test_queries_are_test_images_gallery_is_train(tmp_path, tiny_trees):
    data = tiny_trees.hotels(tmp_path / "hotels50k")
    dm = build(tmp_path / "hotels50k")
    assert dm.dataset_dir() == data and dm.protocol == "query_gallery"
    train, test = dm.splits.train, dm.splits.test
    assert len(train) == 11  # 12 listed, one failed download
    assert train.labels.unique().tolist() == [0, 1, 2, 3, 4]
    assert test.is_query.sum() == 5 and (~test.is_query).sum() == 11
    assert test.labels.unique().tolist() == [0, 1, 2, 3, 4]
    assert all(str(p).endswith(".png") for p in train.paths)  # extension from the URL, as download_train.py


def test_chain_labels(tmp_path, tiny_trees):
    tiny_trees.hotels(tmp_path)
    dm = build(tmp_path, label="chain")
    assert dm.splits.train.labels.unique().tolist() == [0, 1, 2]


def test_bad_options():
    with pytest.raises(ConfigError, match="data.label='room'"):
        Hotels50KDataModule(label="room")
    with pytest.raises(ConfigError, match="data.occlusion"):
        Hotels50KDataModule(occlusion="some")


def test_csv_not_extracted(tmp_path, tiny_trees):
    data = tiny_trees.hotels(tmp_path)
    (data / "input" / "dataset" / "train_set.csv").unlink()
    (data / "input" / "dataset.tar.gz").write_bytes(b"")
    with pytest.raises(DatasetNotFoundError, match=r"train_set.csv is missing \(extract .*dataset.tar.gz"):
        Hotels50KDataModule(root=str(data)).setup()


def test_csv_truncated(tmp_path, tiny_trees):
    data = tiny_trees.hotels(tmp_path)
    path = data / "input" / "dataset" / "test_set.csv"
    path.write_text(path.read_text() + "77,11\n")
    with pytest.raises(UserError, match="test_set.csv: line 7 is incomplete"):
        Hotels50KDataModule(root=str(data)).setup()


def test_absent_test_image_is_an_error(tmp_path, tiny_trees):
    data = tiny_trees.hotels(tmp_path)
    next((data / "images" / "test").rglob("*.jpg")).unlink()
    with pytest.raises(DatasetNotFoundError, match=r"test images listed in test_set.csv but absent: 1 of 5 .*test.tar.gz"):
        build(data)
