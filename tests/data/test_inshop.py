from __future__ import annotations

import shutil

import pytest

from hardneg.data.inshop import InShopDataModule
from hardneg.errors import DatasetNotFoundError, UserError


def build(root, **kwargs):
    dm = InShopDataModule(root=str(root), image_size=32, batch_size=4, **kwargs)
    dm.setup()
    return dm


@pytest.mark.parametrize("under_img", [True, False])
def test_query_gallery(tmp_path, tiny_trees, under_img):
    data = tiny_trees.inshop(tmp_path / "inshop", images_under_img=under_img)
    dm = build(data)
    train, test = dm.splits.train, dm.splits.test
    assert dm.protocol == "query_gallery"
    assert len(train) == 8 and train.labels.unique().tolist() == [0, 1, 2, 3]
    assert len(test) == 4 + 5 and test.is_query.sum() == 4
    assert test.labels.unique().tolist() == [0, 1, 2, 3]  # items 5-8 over queries and gallery together
    queries, gallery = test.labels[test.is_query], test.labels[~test.is_query]
    assert sorted(queries.tolist()) == [0, 1, 1, 3] and sorted(gallery.tolist()) == [0, 0, 1, 2, 3]
    assert all(("/Img/img/" in str(p)) == under_img for p in test.paths)


def test_root_pointing_into_eval(tmp_path, tiny_trees):
    data = tiny_trees.inshop(tmp_path)
    assert build(data / "Eval").dataset_dir() == data


def test_count_line_disagrees(tmp_path, tiny_trees):
    path = tiny_trees.inshop(tmp_path) / "Eval" / "list_eval_partition.txt"
    path.write_text("\n".join(path.read_text().splitlines()[:-4]) + "\n")
    with pytest.raises(UserError, match="line 1 announces 17 images but 13 rows follow"):
        build(tmp_path)


def test_unknown_status(tmp_path, tiny_trees):
    path = tiny_trees.inshop(tmp_path) / "Eval" / "list_eval_partition.txt"
    path.write_text(path.read_text().replace("gallery", "galery", 1))
    with pytest.raises(UserError, match="status 'galery' is not one of"):
        build(tmp_path)


def test_images_not_unpacked(tmp_path, tiny_trees):
    data = tiny_trees.inshop(tmp_path)
    shutil.rmtree(data / "Img")
    with pytest.raises(DatasetNotFoundError, match="neither under .*Img.*unpack Img/img.zip"):
        build(data)


def test_missing_partition_file(tmp_path, tiny_trees):
    data = tiny_trees.inshop(tmp_path)
    (data / "Eval" / "list_eval_partition.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match="(?s)list_eval_partition.txt is missing.*download inshop"):
        build(data)
