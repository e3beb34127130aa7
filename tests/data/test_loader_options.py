"""DataLoader defaults: workers from the CPU count, pinning on GPU, prefetch; all overridable."""
from __future__ import annotations

import pytest

from hardneg.data import base
from hardneg.data.cub import CUBDataModule
from hardneg.errors import ConfigError


def test_auto_workers_share_the_cores_among_local_ranks(monkeypatch):
    monkeypatch.setattr(base, "usable_cpus", lambda: 32)
    monkeypatch.delenv("SLURM_NTASKS_PER_NODE", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert base.resolve_num_workers("auto") == 16  # 31 capped at 16
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert base.resolve_num_workers("auto") == 7  # 8 cores per GPU, one for the main process
    monkeypatch.setattr(base, "usable_cpus", lambda: 1)
    assert base.resolve_num_workers("auto") == 0
    monkeypatch.setattr(base, "usable_cpus", lambda: 32)
    assert base.resolve_num_workers("auto", local_ranks=8) == 3  # a trainer's 8 devices on this node
    assert base.resolve_num_workers(3) == 3 and base.resolve_num_workers("2") == 2


@pytest.mark.parametrize("bad", [-1, "many", True])
def test_bad_worker_count_is_a_config_error(bad):
    with pytest.raises(ConfigError, match=r"data.num_workers=.* must be a number >= 0 or auto"):
        base.resolve_num_workers(bad)


def test_loader_options_reach_the_dataloaders(tmp_path, tiny_trees):
    data = tiny_trees.cub(tmp_path)
    dm = CUBDataModule(root=str(data), image_size=16, batch_size=4, num_workers=1, prefetch_factor=3,
                       pin_memory=False, persistent_workers=False)
    for loader in (dm.train_dataloader(), dm.test_dataloader()):
        assert (loader.num_workers, loader.prefetch_factor, loader.pin_memory, loader.persistent_workers) == (1, 3, False, False)
    serial = CUBDataModule(root=str(data), image_size=16, batch_size=4)  # no workers: no prefetch options
    assert serial.test_dataloader().num_workers == 0
    with pytest.raises(ConfigError, match="data.pin_memory='yes' is unknown"):
        CUBDataModule(root=str(data), pin_memory="yes")
