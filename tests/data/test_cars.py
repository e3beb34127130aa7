from __future__ import annotations

import pytest

from hardneg.data.cars import CarsDataModule
from hardneg.errors import DatasetNotFoundError, UserError


def build(root, **kwargs):
    dm = CarsDataModule(root=str(root), image_size=32, batch_size=4, **kwargs)
    dm.setup()
    return dm


@pytest.mark.parametrize("layout", ["released", "devkit"])
def test_split_first_half_of_classes(tmp_path, tiny_trees, layout):
    data = (tiny_trees.cars if layout == "released" else tiny_trees.cars_devkit)(tmp_path / "cars")
    dm = build(data)
    train, test = dm.splits.train, dm.splits.test
    assert len(train) == 3 + 2 + 1 and len(test) == 2 + 3 + 1  # classes 1-3 train, 4-6 test
    assert train.labels.unique().tolist() == [0, 1, 2] and test.labels.unique().tolist() == [0, 1, 2]
    assert sorted(train.labels.tolist()) == [0, 0, 0, 1, 1, 2]  # class 3, one image, stays
    assert sorted(test.labels.tolist()) == [0, 0, 1, 1, 1, 2]
    x, label, index = train[0]
    assert x.shape == (3, 32, 32) and index == 0


@pytest.mark.parametrize("layout", ["released", "devkit"])
def test_bbox_is_one_based_inclusive(tmp_path, tiny_trees, layout):
    data = (tiny_trees.cars if layout == "released" else tiny_trees.cars_devkit)(tmp_path)
    assert build(data, use_bbox=True).splits.train.load(0).size == (22 - 3 + 1, 18 - 4 + 1)


def test_root_one_level_too_high_or_low(tmp_path, tiny_trees):
    data = tiny_trees.cars(tmp_path / "cars" / "stanford_cars")
    assert build(tmp_path / "cars").dataset_dir() == data
    assert build(data / "car_ims").dataset_dir() == data


def test_missing_annotations(tmp_path, tiny_trees):
    data = tiny_trees.cars(tmp_path)
    (data / "cars_annos.mat").unlink()
    with pytest.raises(DatasetNotFoundError, match="(?s)cars_annos.mat is missing.*download cars"):
        build(data)


def test_truncated_mat(tmp_path, tiny_trees):
    data = tiny_trees.cars(tmp_path)
    mat = data / "cars_annos.mat"
    mat.write_bytes(mat.read_bytes()[:300])
    with pytest.raises(UserError, match="cars_annos.mat: cannot be read as a MATLAB file.*truncated"):
        build(data)


def test_devkit_without_labelled_test_annotations(tmp_path, tiny_trees):
    data = tiny_trees.cars_devkit(tmp_path)
    (data / "cars_test_annos_withlabels.mat").unlink()
    with pytest.raises(DatasetNotFoundError, match="cars_test_annos_withlabels.mat is missing"):
        build(data)


def test_listed_image_absent(tmp_path, tiny_trees):
    data = tiny_trees.cars(tmp_path)
    (data / "car_ims" / "000002.jpg").unlink()
    with pytest.raises(DatasetNotFoundError, match="train images listed in the annotations but absent: 1 of 6"):
        build(data)
