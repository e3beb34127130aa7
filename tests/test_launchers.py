"""Hydra launcher presets: SLURM (submitit) composes for DDP jobs; joblib runs a local sweep."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from hardneg.config import config_dir

# The launcher plugins are dev extras (pip install -e ".[dev]"); without them there is nothing to test.
JobLibLauncherConf = pytest.importorskip("hydra_plugins.hydra_joblib_launcher.config").JobLibLauncherConf
SlurmQueueConf = pytest.importorskip("hydra_plugins.hydra_submitit_launcher.config").SlurmQueueConf


def hydra_cfg(*overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def field_names(conf_class) -> set[str]:
    return {f.name for f in dataclasses.fields(conf_class)}


def test_slurm_preset_gives_one_task_per_gpu_on_every_node():
    cfg = hydra_cfg("hydra/launcher=submitit_slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2",
                    "hydra.launcher.partition=gpu")
    launcher = cfg.hydra.launcher
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes) == (4, 4, 2)
    assert launcher.partition == "gpu" and launcher.timeout_min > 0 and launcher.mem_gb and launcher.cpus_per_task
    # Our file shadows the plugin's config: it must keep every field the launcher reads.
    assert set(launcher) == field_names(SlurmQueueConf)
    assert launcher._target_.endswith("SlurmLauncher")
    single = hydra_cfg("hydra/launcher=submitit_slurm").hydra.launcher  # trainer=default: 1 GPU, 1 node
    assert (single.tasks_per_node, single.gpus_per_node, single.nodes) == (1, 1, 1)


def test_joblib_preset_keeps_every_plugin_field():
    launcher = hydra_cfg("hydra/launcher=joblib", "hydra.launcher.n_jobs=3").hydra.launcher
    assert set(launcher) == field_names(JobLibLauncherConf) and launcher.n_jobs == 3
    assert OmegaConf.to_container(launcher, resolve=True)["_target_"].endswith("JoblibLauncher")


def run_cli(*args, cwd=None, timeout=120):
    """The CLI, by default in a scratch directory so Hydra's outputs/ never lands in the checkout."""
    if cwd is None:
        import tempfile

        with tempfile.TemporaryDirectory() as scratch:
            return run_cli(*args, cwd=scratch, timeout=timeout)
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="offline")
    return subprocess.run([sys.executable, "-m", "hardneg.run", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=cwd)


def test_cli_shows_the_slurm_launcher_without_a_deprecation_warning():
    out = run_cli("hydra/launcher=submitit_slurm", "trainer=ddp", "trainer.devices=8", "--cfg", "hydra")
    assert out.returncode == 0, out.stderr
    assert "SlurmLauncher" in out.stdout and "tasks_per_node: ${oc.select:trainer.devices,1}" in out.stdout
    assert "deprecated" not in out.stderr


@pytest.mark.slow
def test_joblib_sweep_runs_two_jobs_in_parallel(tmp_path):
    out = run_cli(
        "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1", f"hydra.sweep.dir={tmp_path}",
        f"paths.cache_dir={tmp_path / 'cache'}", "model=tiny", "data.max_classes=12", "data.image_size=32",
        "data.batch_size=12", "data.images_per_font=1", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
        "trainer.enable_progress_bar=false", "logger=none", "callbacks.progress_bar=null", timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in out.stdout  # the launcher Hydra used, as it logs it
    results = [json.loads((tmp_path / str(job) / "results.json").read_text()) for job in (0, 1)]
    assert all("recall@1" in r["final"] for r in results)
    assert results[0]["initial"] != results[1]["initial"]  # seed=0 and seed=1 are different runs
