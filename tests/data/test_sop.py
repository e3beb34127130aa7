from __future__ import annotations

import pytest

from hardneg.data.sop import SOPDataModule
from hardneg.errors import DatasetNotFoundError, UserError


def build(root, **kwargs):
    dm = SOPDataModule(root=str(root), image_size=32, batch_size=4, **kwargs)
    dm.setup()
    return dm


def test_splits_from_the_files(tmp_path, tiny_trees):
    data = tiny_trees.sop(tmp_path / "sop")
    dm = build(tmp_path / "sop")  # the root holds Stanford_Online_Products/
    assert dm.dataset_dir() == data
    train, test = dm.splits.train, dm.splits.test
    assert len(train) == 8 and len(test) == 6
    assert train.labels.unique().tolist() == [0, 1, 2, 3] and test.labels.unique().tolist() == [0, 1, 2]
    assert dm.recall_ks == (1, 2, 4, 8)  # the constructor default; conf/data/sop.yaml sets 1,10,100,1000


def test_wrong_header(tmp_path, tiny_trees):
    data = tiny_trees.sop(tmp_path)
    path = data / "Ebay_test.txt"
    path.write_text("\n".join(path.read_text().splitlines()[1:]) + "\n")
    with pytest.raises(UserError, match="Ebay_test.txt: starts with .* expected the header image_id class_id"):
        build(data)


def test_truncated_row(tmp_path, tiny_trees):
    data = tiny_trees.sop(tmp_path)
    path = data / "Ebay_train.txt"
    path.write_text(path.read_text() + "99 4 1\n")
    with pytest.raises(UserError, match="Ebay_train.txt: line 10 has 3 fields, expected 4"):
        build(data)


def test_header_only(tmp_path, tiny_trees):
    data = tiny_trees.sop(tmp_path)
    (data / "Ebay_test.txt").write_text("image_id class_id super_class_id path\n")
    with pytest.raises(UserError, match="Ebay_test.txt: lists no images"):
        build(data)


def test_missing_split_file(tmp_path, tiny_trees):
    data = tiny_trees.sop(tmp_path)
    (data / "Ebay_test.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match="(?s)Ebay_test.txt is missing.*download sop"):
        build(data)
