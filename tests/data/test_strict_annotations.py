"""Damaged annotation files stop or warn instead of training on wrong data (issue: no silently wrong data)."""
from __future__ import annotations

import logging
import warnings

import pytest

from hardneg.data.benchmark import DatasetSizeWarning
from hardneg.data.cub import CUBDataModule
from hardneg.data.inshop import InShopDataModule
from hardneg.data.sop import SOPDataModule
from hardneg.errors import UserError

SMALL = dict(image_size=32, batch_size=4)
# Class 20 is last, so the last label line reads "<id> 20", as CUB's reads "11788 200".
COUNTS = {1: 2, 2: 2, 11: 2, 20: 2}


def _setup(cls, root, **kwargs):
    dm = cls(root=str(root), **{**SMALL, **kwargs})
    dm.setup()
    return dm


def _rewrite_last_line(path, new_last: str, newline: bool) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines[:-1], new_last]) + ("\n" if newline else ""))


def test_cub_label_cut_short_without_newline_is_an_error(tmp_path, tiny_trees):
    data = tiny_trees.cub(tmp_path, counts=COUNTS)
    _rewrite_last_line(data / "image_class_labels.txt", "8 2", newline=False)  # was "8 20"
    with pytest.raises(UserError, match=r"image_class_labels.txt: its last line '8 2' has no final newline.*cut short"):
        _setup(CUBDataModule, data)


def test_cub_label_disagreeing_with_the_image_folder_is_an_error(tmp_path, tiny_trees):
    data = tiny_trees.cub(tmp_path, counts=COUNTS)
    _rewrite_last_line(data / "image_class_labels.txt", "8 2", newline=True)
    with pytest.raises(UserError, match=r"image 8 has class 2 but images.txt puts it in 020.Bird_20/, class 20"):
        _setup(CUBDataModule, data)


def test_cub_ids_that_disagree_between_files(tmp_path, tiny_trees):
    data = tiny_trees.cub(tmp_path, counts=COUNTS)
    _rewrite_last_line(data / "image_class_labels.txt", "9 20", newline=True)  # image 8 relabelled as a new id
    with pytest.raises(UserError, match="image ids do not match"):
        _setup(CUBDataModule, data)


def test_unterminated_file_with_the_released_count_is_accepted(tmp_path, tiny_trees, monkeypatch):
    data = tiny_trees.cub(tmp_path, counts=COUNTS)
    monkeypatch.setattr(CUBDataModule, "released_rows", {"images.txt": 8, "image_class_labels.txt": 8, "classes.txt": 4})
    path = data / "image_class_labels.txt"
    path.write_text(path.read_text().rstrip("\n"))  # a complete file that merely lacks the final newline
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dm = _setup(CUBDataModule, data)
    assert len(dm.splits.train) + len(dm.splits.test) == 8


def test_sop_count_differing_from_the_release_warns_with_both_counts(tmp_path, tiny_trees, monkeypatch):
    data = tiny_trees.sop(tmp_path)
    monkeypatch.setattr(SOPDataModule, "released_rows", {"Ebay_train.txt": 8, "Ebay_test.txt": 6})
    monkeypatch.setattr(SOPDataModule, "released_classes", {"Ebay_train.txt": 4, "Ebay_test.txt": 3})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _setup(SOPDataModule, data)  # the released counts: silent
    test_txt = data / "Ebay_test.txt"
    test_txt.write_text("\n".join(test_txt.read_text().splitlines()[:-1]) + "\n")  # lines cut at a line end
    with pytest.warns(DatasetSizeWarning, match=r"Ebay_test.txt lists 5 rows but the released dataset has 6") as record:
        dm = _setup(SOPDataModule, data)
    assert any("lists 2 products but the released dataset has 3" in str(w.message) for w in record)
    assert len(dm.splits.test) == 5


def test_sop_cut_mid_line_is_an_error(tmp_path, tiny_trees):
    data = tiny_trees.sop(tmp_path)
    test_txt = data / "Ebay_test.txt"
    test_txt.write_text(test_txt.read_text()[:-12])  # the last path cut short, no newline
    with pytest.raises(UserError, match="Ebay_test.txt: its last line .* no final newline"):
        _setup(SOPDataModule, data)


def test_sop_class_ids_out_of_range_or_shared(tmp_path, tiny_trees):
    data = tiny_trees.sop(tmp_path)
    train_txt = data / "Ebay_train.txt"
    original = train_txt.read_text()
    train_txt.write_text(original.replace("\n1 1 1 ", "\n1 0 1 ", 1))
    with pytest.raises(UserError, match=r"line 2: class id 0 is out of range"):
        _setup(SOPDataModule, data)
    train_txt.write_text(original.replace("\n1 1 1 ", "\n1 5 1 ", 1))  # product 5 is a test product
    with pytest.raises(UserError, match=r"1 product ids also appear in Ebay_train.txt \(e.g. \[5\]\)"):
        _setup(SOPDataModule, data)


def test_inshop_item_in_train_and_test_is_an_error(tmp_path, tiny_trees):
    data = tiny_trees.inshop(tmp_path)
    part = data / "Eval" / "list_eval_partition.txt"
    part.write_text(part.read_text().replace("id_00000001   train", "id_00000005   train", 1))
    with pytest.raises(UserError, match=r"1 items are in both train and query/gallery \(e.g. \['id_00000005'\]\)"):
        _setup(InShopDataModule, data)


def test_dropped_training_classes_are_logged_once_by_count(tmp_path, tiny_trees, caplog):
    dm = _setup(CUBDataModule, tiny_trees.cub(tmp_path))  # training class 4 has a single image
    with caplog.at_level(logging.WARNING, logger="hardneg.data.base"):
        dm.train_dataloader()
        dm.train_dataloader()
    messages = [r.getMessage() for r in caplog.records if "left out of training" in r.getMessage()]
    assert messages == ["cub: 1 of 4 training classes have fewer than data.samples_per_class=2 images and are "
                        "left out of training (1 images); they stay in evaluation"]


@pytest.mark.slow
def test_cut_label_file_stops_the_cli_with_exit_2(tmp_path, tiny_trees):
    import os
    import subprocess
    import sys

    data = tiny_trees.cub(tmp_path / "data", counts=COUNTS)
    _rewrite_last_line(data / "image_class_labels.txt", "8 2", newline=False)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "COLUMNS": "400"}
    proc = subprocess.run(
        [sys.executable, "-m", "hardneg.run", "data=cub", f"data.root={data}", "model=tiny", "logger=none",
         f"paths.output_dir={tmp_path / 'run'}"],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 2 and "Traceback" not in out
    assert "its last line '8 2' has no final newline" in out
