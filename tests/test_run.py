"""End-to-end: the real composed config, shrunk, through train(cfg) and the CLI."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hardneg.run import train


def test_train_returns_initial_and_final_metrics(make_cfg):
    result = train(make_cfg())
    for key in ("recall@1", "recall@2", "recall@4", "recall@8", "map@r", "r_precision"):
        assert 0.0 <= result["initial"][key] <= 1.0 and 0.0 <= result["final"][key] <= 1.0
    assert [epoch for epoch, _ in result["history"]] == [0, 1]
    assert result["train"]["valid_triplets"] > 0 and 0.0 <= result["train"]["hn_ratio"] <= 1.0
    saved = json.loads(Path(result["run_dir"], "results.json").read_text())
    assert saved["final"] == result["final"]
    assert os.path.exists(os.path.join(result["run_dir"], "checkpoints", "last.ckpt"))


def test_training_moves_the_embedding(make_cfg):
    result = train(make_cfg(["trainer.max_epochs=2", "optim.optimizer.lr=0.5"]))
    assert result["initial"] != result["final"]


def test_frozen_cached_backbone_path_trains_only_the_head(make_cfg):
    from hardneg.builders import build_run
    from hardneg.run import resolve_run_dir

    cfg = make_cfg(["model.freeze_backbone=true", "model.cache_features=true", "optim.optimizer.lr=0.5"])
    run = build_run(cfg, resolve_run_dir(cfg))
    net = run.module.net
    backbone = {k: v.clone() for k, v in net.backbone.state_dict().items()}
    head = {k: v.clone() for k, v in net.head.state_dict().items()}
    run.execute()
    assert all(torch.equal(v, net.backbone.state_dict()[k]) for k, v in backbone.items()), "backbone changed"
    assert any(not torch.equal(v, net.head.state_dict()[k]) for k, v in head.items()), "head did not train"
    assert list(Path(cfg.paths.cache_dir).glob("features/*.pt"))


@pytest.mark.parametrize(
    "overrides",
    [
        ["loss=nca", "mining=easy_semihard"],
        ["loss=nca", "mining=easy_hard"],
        ["loss.hard_rule=paper"],
        ["logger=csv"],
        ["logger=wandb", "logger.mode=offline"],
        ["logger=wandb", "logger.mode=disabled"],  # the run summary goes to a disabled run without error
        ["optim.scheduler=null"],
    ],
    ids=lambda o: " ".join(o),
)
def test_config_groups_compose_and_train(make_cfg, overrides):
    result = train(make_cfg(overrides))
    assert set(result["final"]) >= {"recall@1", "map@r"}


def test_csv_and_wandb_loggers_write_their_files(make_cfg, tmp_path):
    run_dir = train(make_cfg(["logger=csv"]))["run_dir"]
    csv = open(os.path.join(run_dir, "csv", "metrics.csv")).read()
    assert "train/loss" in csv and "test/recall@1" in csv
    run_dir = train(make_cfg(["logger=wandb", "logger.mode=auto", "paths.output_dir=" + str(tmp_path / "w")]))["run_dir"]
    assert list((tmp_path / "w" / "wandb").glob("offline-run-*"))


def test_proxy_losses_get_the_number_of_training_classes(make_cfg):
    from hardneg.builders import build_criterion

    cfg = make_cfg(["loss=proxy_anchor"])
    assert tuple(build_criterion(cfg, 6).loss.proxies.shape) == (6, cfg.model.dim)


def run_cli(*args, timeout=120):
    """The CLI in a scratch directory, so Hydra's outputs/ never lands in the checkout."""
    import tempfile

    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="offline")
    with tempfile.TemporaryDirectory() as scratch:
        return subprocess.run(
            [sys.executable, "-m", "hardneg.run", *args], capture_output=True, text=True, env=env,
            timeout=timeout, cwd=scratch,
        )


def test_cli_prints_the_resolved_config():
    out = run_cli("--cfg", "job", "loss=nca", "mining=easy_semihard")
    assert out.returncode == 0, out.stderr
    assert "hardneg.losses.NCALoss" in out.stdout and "neg: semihard" in out.stdout


def test_cli_lists_valid_choices_for_an_unknown_option():
    out = run_cli("loss=bogus")
    assert out.returncode == 2
    assert "loss='bogus': no such option" in out.stderr and "sct" in out.stderr and "nca" in out.stderr


def test_cli_rejects_a_bad_value_by_name(tmp_path):
    out = run_cli("loss.hard_rule=sometimes", "model=tiny", "data.max_classes=8", "logger=none", f"paths.output_dir={tmp_path}")
    assert out.returncode == 2
    assert "loss.hard_rule='sometimes' is unknown" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_cli_default_job_smoke(tmp_path):
    """The README's main job, shortened: pretrained backbone, cached features, W&B offline."""
    out = run_cli(f"paths.output_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}", "trainer.max_epochs=2", timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "recall@1" in out.stdout and "run directory" in out.stdout and "wandb sync" in out.stdout + out.stderr


def test_a_cluster_signal_goes_to_the_handler_that_was_there_before(make_cfg, monkeypatch, capsys):
    """Under submitit its own SIGUSR2 handler requeues the job: after saving we hand it the signal."""
    import signal

    from hardneg.callbacks.checkpoint import RunInterrupted
    from hardneg.run import _after_interruption

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    calls = []
    stop = RunInterrupted(signal.SIGUSR2, Path("run/checkpoints/last.ckpt"), lambda signum, frame: calls.append(signum))
    assert _after_interruption(stop, make_cfg()) == 128 + signal.SIGUSR2
    assert calls == [signal.SIGUSR2]
    assert "SIGUSR2 received; checkpoint written: run/checkpoints/last.ckpt" in capsys.readouterr().err
