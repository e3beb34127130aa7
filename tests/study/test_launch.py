"""The study's multirun commands: every method and seed, split into parallel parts by seed."""
from pathlib import Path

import pytest

from hardneg.study.launch import part_commands
from hardneg.study.testbeds import METHODS, TESTBEDS, overrides


def test_parts_cover_every_seed_once_with_the_testbed_overrides(tmp_path):
    commands = part_commands(tmp_path, "split", METHODS, [0, 1, 2], jobs=2, extra=["trainer.max_epochs=3"])
    assert len(commands) == 2
    seeds = [c[4] for c in commands]  # python -m hardneg.run -m <seed=...>
    assert seeds == ["seed=0,2", "seed=1"]  # the seed is the first (outermost) sweep
    for i, command in enumerate(commands):
        assert f"experiment={','.join(METHODS)}" in command
        assert set(overrides("split")) <= set(command) and "callbacks.collapse.action=continue" in command
        assert command[-2:] == ["trainer.max_epochs=3", f"hydra.sweep.dir={Path(tmp_path) / f'part{i}'}"]
    assert len(part_commands(tmp_path, "head", ["sct"], [0], jobs=4, extra=[])) == 1


def test_every_testbed_and_method_composes(make_cfg):
    from hardneg.config import config_dir

    for method in METHODS:
        assert (config_dir() / "experiment" / f"{method}.yaml").exists()
    for name in TESTBEDS:
        cfg = make_cfg([f"experiment={METHODS[-1]}", *overrides(name)], fast=False)
        assert cfg.callbacks.collapse.action == "continue"
    with pytest.raises(KeyError):
        overrides("nonsense")


def test_proxy_anchor_gets_its_class_count_from_the_data(make_cfg):
    """OmegaConf's `in` is False for a ??? value: the builder used to leave num_classes unset."""
    from hardneg.builders import build_criterion

    criterion = build_criterion(make_cfg(["experiment=proxy_anchor"]), num_train_classes=7)
    assert criterion.loss.proxies.shape[0] == 7
