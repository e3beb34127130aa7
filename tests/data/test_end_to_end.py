"""One epoch of the real entry point's ``train(cfg)`` on each tiny benchmark tree (tiny model)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

TREES = {"cub": "cub", "cars": "cars", "sop": "sop", "inshop": "inshop", "hotels50k": "hotels"}


def overrides(name: str, root) -> list[str]:
    return [
        f"data={name}", f"data.root={root}", "model=tiny", "data.image_size=32", "data.batch_size=4",
        "data.eval_batch_size=64", "data.num_workers=0", "trainer.max_epochs=1", "logger=none",
        # The tiny trees have a handful of test images: the presets' K up to 1000 would stop the
        # run (a K larger than the gallery reads 1.0 whatever the embedding; hardneg/validate.py).
        "data.recall_ks=[1,2]",
        # ++: set whether or not the trainer/callbacks configs already hold these keys
        "++trainer.enable_progress_bar=false", "++callbacks.progress_bar=null",
    ]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Hotels-50K")
@pytest.mark.parametrize("name", list(TREES))
def test_one_epoch(tmp_path, tiny_trees, make_cfg, name):
    from hardneg.run import train

    getattr(tiny_trees, TREES[name])(tmp_path / "data")
    result = train(make_cfg(overrides(name, tmp_path / "data"), fast=False))
    for k in (1, 2):
        assert 0.0 <= result["final"][f"recall@{k}"] <= 1.0
    assert result["initial"] and result["history"]


@pytest.mark.slow
def test_run_without_data_explains_what_to_get(tmp_path):
    env = {**os.environ, "HARDNEG_DATA": str(tmp_path / "nothing"), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline",
           "COLUMNS": "400"}  # a wide console: no line wrapped inside the paths we look for
    proc = subprocess.run(
        [sys.executable, "-m", "hardneg.run", "loss=sct", "data=sop", "logger=none", f"paths.output_dir={tmp_path / 'run'}"],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )
    out = " ".join((proc.stdout + proc.stderr).split())  # undo any console wrapping
    assert proc.returncode != 0
    assert "Traceback" not in out
    for part in (f"{tmp_path / 'nothing' / 'sop'} does not exist", "Stanford_Online_Products/", "Ebay_train.txt",
                 "Ebay_test.txt", f"python -m hardneg.data.download sop --root {tmp_path / 'nothing' / 'sop'}"):
        assert part in out
