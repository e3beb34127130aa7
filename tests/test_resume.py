"""Resume, exactly: a run stopped (SIGINT, SIGKILL, a cluster's signal) and continued ends with
the same weights, metrics and logs as one that was never stopped (``trainer.deterministic=true``)."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from hardneg.builders import build_run
from hardneg.callbacks.checkpoint import RunInterrupted
from hardneg.errors import ConfigError
from hardneg.run import resolve_run_dir, train
from tests.conftest import FAST_OVERRIDES

ROOT = Path(__file__).resolve().parent.parent
# 3 epochs of 4 steps, evaluated every epoch, a checkpoint every 3 steps (3, 6, 9 are
# mid-epoch; 4, 8, 12 are epoch ends). Random negatives: the torch generator matters too.
SHORT = [
    "trainer.max_epochs=3", "trainer.limit_train_batches=4", "trainer.check_val_every_n_epoch=1",
    "trainer.deterministic=true", "callbacks.checkpoint.every_n_train_steps=3", "mining=easy_random",
    "logger=csv", "callbacks.triplet_space=null", "callbacks.retrieval_examples=null",
]


@pytest.fixture
def one_thread():
    """One intra-op thread, as the subprocesses get (OMP_NUM_THREADS=1): equal bits need equal threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def csv_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as file:
        return list(csv.DictReader(file))


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


class SignalAt(L.Callback):
    """Sends this process ``signum`` at the end of optimiser step ``step``."""

    def __init__(self, step: int, signum: int = signal.SIGINT):
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            signal.raise_signal(self.signum)


@pytest.mark.parametrize("stop_step", [pytest.param(4, marks=pytest.mark.slow), 6], ids=["at_epoch_end", "mid_epoch"])
def test_interrupted_then_resumed_run_equals_uninterrupted(make_cfg, tmp_path, one_thread, stop_step):
    whole = train(make_cfg([*SHORT, f"paths.output_dir={tmp_path / 'whole'}"]))
    cfg = make_cfg([*SHORT, f"paths.output_dir={tmp_path / 'split'}"])
    run = build_run(cfg, resolve_run_dir(cfg))
    run.trainer.callbacks.insert(0, SignalAt(stop_step))
    with pytest.raises(RunInterrupted):
        run.execute()
    stopped = results(tmp_path / "split")
    assert stopped["status"] == "interrupted" and stopped["signal"] == "SIGINT"
    saved = torch.load(tmp_path / "split" / "checkpoints" / "last.ckpt", weights_only=True, mmap=True)
    assert saved["global_step"] == stop_step

    resumed = train(cfg)  # resume=auto finds last.ckpt
    assert resumed["status"] == "completed"
    assert resumed["resumes"] == [{"checkpoint": str(tmp_path / "split" / "checkpoints" / "last.ckpt"),
                                   "global_step": stop_step, "epoch": saved["epoch"]}]
    assert [e for e, _ in resumed["history"]] == [0, 1, 2, 3]  # epoch 0 not evaluated again
    assert resumed["history"] == whole["history"] and resumed["final"] == whole["final"]
    assert_same_weights(tmp_path / "whole", tmp_path / "split")
    assert csv_rows(tmp_path / "split") == csv_rows(tmp_path / "whole")  # one log, nothing twice


@pytest.mark.slow
def test_sampler_position_matters_for_a_mid_epoch_resume(make_cfg, tmp_path, one_thread, monkeypatch):
    """The check above is sharp: a loader that restarts its epoch breaks equality."""
    from hardneg.data.samplers import ClassBalancedBatchSampler

    train(make_cfg([*SHORT, f"paths.output_dir={tmp_path / 'whole'}"]))
    cfg = make_cfg([*SHORT, f"paths.output_dir={tmp_path / 'split'}"])
    run = build_run(cfg, resolve_run_dir(cfg))
    run.trainer.callbacks.insert(0, SignalAt(6))
    with pytest.raises(RunInterrupted):
        run.execute()
    monkeypatch.setattr(ClassBalancedBatchSampler, "resume_at", lambda self, epoch, batches_done: None)
    train(cfg)
    with pytest.raises(AssertionError, match="tensors differ"):
        assert_same_weights(tmp_path / "whole", tmp_path / "split")


def test_resume_refuses_a_config_that_changes_the_result(make_cfg, tmp_path):
    cfg = make_cfg([f"paths.output_dir={tmp_path}"])
    train(cfg)
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"(?s)loss.tau: checkpoint 0.1, now 0.3.*optim.optimizer.lr: checkpoint 0.2, now 0.1"):
        build_run(make_cfg([f"paths.output_dir={tmp_path}", "optim.optimizer.lr=0.1", "loss.tau=0.3"]), tmp_path)
    assert time.monotonic() - start < 5  # before any data is read


@pytest.mark.slow
def test_resume_accepts_keys_that_do_not_change_the_result(make_cfg, tmp_path):
    train(make_cfg([f"paths.output_dir={tmp_path}"]))
    # Longer training, another logger or progress display: the same run, continued (evaluated
    # at its end only, as a 2-epoch run with check_val_every_n_epoch=10 is).
    more = train(make_cfg([f"paths.output_dir={tmp_path}", "trainer.max_epochs=2", "logger=csv"]))
    assert [e for e, _ in more["history"]] == [0, 2] and len(more["resumes"]) == 1


def test_a_bad_resume_value_is_named_before_any_work(make_cfg, tmp_path):
    for value in ("nowhere.ckpt", "sometimes"):
        with pytest.raises(ConfigError, match=f"resume='{value}'.*auto, never or the path"):
            build_run(make_cfg([f"paths.output_dir={tmp_path}", f"resume={value}"]), tmp_path)
    (tmp_path / "broken.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot read checkpoint .*broken.ckpt.*resume=never"):
        build_run(make_cfg([f"paths.output_dir={tmp_path}", f"resume={tmp_path / 'broken.ckpt'}"]), tmp_path)


@pytest.mark.slow
def test_resume_never_starts_afresh_and_a_path_resumes_elsewhere(make_cfg, tmp_path):
    cfg = make_cfg([f"paths.output_dir={tmp_path}"])
    first = train(cfg)
    again = train(make_cfg([f"paths.output_dir={tmp_path}", "resume=never"]))
    assert again["resumes"] == [] and again["history"] == first["history"]  # same seed, same numbers
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    other = tmp_path / "elsewhere"
    resumed = train(make_cfg([f"paths.output_dir={other}", f"resume={ckpt}"]))
    assert resumed["resumes"][0]["checkpoint"] == str(ckpt)


# -- real processes ---------------------------------------------------------------------------
def cli(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "hardneg.run", *FAST_OVERRIDES, *SHORT, f"paths.output_dir={out}",
            f"paths.cache_dir={out.parent / 'cache'}", *extra]


def cli_env(**extra: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", WANDB_MODE="offline",
               HARDNEG_ALLOW_TARGETS="tests", **extra)  # the pause callback lives in tests/
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def start_paused(out: Path, step: int, env: dict | None = None) -> subprocess.Popen:
    """The CLI run, held at the end of optimiser ``step`` (tests/resume_helpers.py) until signalled."""
    marker = out.parent / f"{out.name}.paused"
    pause = f"+callbacks.pause={{_target_:tests.resume_helpers.PauseAt,step:{step},marker:'{marker}'}}"
    proc = subprocess.Popen(cli(out, pause), cwd=out.parent, env=env or cli_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the run never reached step {step}: {proc.communicate()[1][-3000:]}")
        time.sleep(0.05)
    return proc


def test_cli_killed_mid_epoch_resumes_to_the_same_weights_and_metrics(make_cfg, tmp_path, one_thread):
    # The uninterrupted run in this process (one thread, as the CLI's OMP_NUM_THREADS=1) saves a start-up.
    train(make_cfg([*SHORT, f"paths.output_dir={tmp_path / 'whole'}", f"paths.cache_dir={tmp_path / 'cache'}"]))
    proc = start_paused(tmp_path / "split", step=7)  # last checkpoint: step 6, epoch 1's 2nd of 4 batches
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    saved = torch.load(tmp_path / "split" / "checkpoints" / "last.ckpt", weights_only=True, mmap=True)
    assert saved["global_step"] == 6 and saved["epoch"] == 1
    resumed = subprocess.run(cli(tmp_path / "split"), cwd=tmp_path, env=cli_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = results(tmp_path / "whole"), results(tmp_path / "split")
    assert b["status"] == "completed" and b["resumes"][0]["global_step"] == 6
    assert b["history"] == a["history"]
    assert_same_weights(tmp_path / "whole", tmp_path / "split")
    assert csv_rows(tmp_path / "split") == csv_rows(tmp_path / "whole")


@pytest.mark.slow
def test_cli_sigint_saves_and_says_how_to_continue(tmp_path):
    proc = start_paused(tmp_path / "run", step=6)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, stderr[-3000:]
    assert "Traceback" not in stderr and "Continue with:" in stderr
    saved = results(tmp_path / "run")
    assert saved["status"] == "interrupted" and saved["signal"] == "SIGINT"
    assert "-m hardneg.run" in saved["continue_with"] and f"paths.output_dir={tmp_path / 'run'}" in saved["continue_with"]
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True, mmap=True)
    assert ckpt["global_step"] == 6


def test_slurm_signal_saves_and_requeues_through_scontrol(tmp_path):
    """Without a cluster: SLURM_JOB_ID set, a fake scontrol on PATH, the signal sbatch --signal sends."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol_calls"
    fake = bin_dir / "scontrol"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    fake.chmod(0o755)
    env = cli_env(SLURM_JOB_ID="4242", PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    proc = start_paused(tmp_path / "run", step=5, env=env)
    proc.send_signal(signal.SIGUSR1)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGUSR1, stderr[-3000:]
    assert calls.exists(), stderr[-3000:]
    assert calls.read_text().split() == ["requeue", "4242"]
    assert "requeued SLURM job 4242" in stderr
    assert results(tmp_path / "run")["status"] == "interrupted"
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True, mmap=True)
    assert ckpt["global_step"] == 5


# -- logs and commands ------------------------------------------------------------------------
def test_wandb_keeps_its_run_id_only_when_resuming(tmp_path):
    from hardneg.loggers import wandb_run_id

    first = wandb_run_id(tmp_path, resuming=False)
    assert wandb_run_id(tmp_path, resuming=True) == first
    fresh = wandb_run_id(tmp_path, resuming=False)  # resume=never in the same directory: a new W&B run
    assert fresh != first and wandb_run_id(tmp_path, resuming=True) == fresh


def test_csv_rows_after_the_checkpoint_are_dropped(tmp_path):
    from hardneg.loggers import csv_rows_before

    path = tmp_path / "metrics.csv"
    path.write_text("epoch,step,train/loss\n0,0,1.0\n0,1,0.9\n0,2,0.8\n1,3,0.7\n")
    fields, rows = csv_rows_before(path, resume_step=2)
    assert fields == ["epoch", "step", "train/loss"] and [r["step"] for r in rows] == ["0", "1"]
    assert csv_rows_before(tmp_path / "missing.csv", 2) == ([], [])


def test_continue_command_points_at_the_run_directory(monkeypatch, tmp_path):
    from hardneg.resume import continue_command

    monkeypatch.setattr(sys, "argv", ["run.py", "loss=nca", "resume=never", "seed=1"])
    assert continue_command(tmp_path) == f"python -m hardneg.run loss=nca seed=1 hydra.run.dir={tmp_path}"
    monkeypatch.setattr(sys, "argv", ["run.py", f"paths.output_dir={tmp_path}"])
    assert continue_command(tmp_path / "ignored") == f"python -m hardneg.run paths.output_dir={tmp_path}"


@pytest.mark.slow
def test_analysis_files_and_histories_continue_across_a_resume(make_cfg, tmp_path, one_thread):
    """The triplet-space callback keeps the epochs before the checkpoint and its running histogram."""
    overrides = [o for o in SHORT if not o.startswith("callbacks.triplet_space")]
    whole = make_cfg([*overrides, f"paths.output_dir={tmp_path / 'whole'}"])
    train(whole)
    cfg = make_cfg([*overrides, f"paths.output_dir={tmp_path / 'split'}"])
    run = build_run(cfg, resolve_run_dir(cfg))
    run.trainer.callbacks.insert(0, SignalAt(6))
    with pytest.raises(RunInterrupted):
        run.execute()
    train(cfg)
    names = lambda d: sorted(p.name for p in (d / "analysis").glob("*.pt"))  # noqa: E731
    assert names(tmp_path / "split") == names(tmp_path / "whole")
    for name in ("train_epoch_002.pt", "test_epoch_001.pt"):  # epoch 2 straddles the interruption
        a = torch.load(tmp_path / "whole" / "analysis" / name, weights_only=False)
        b = torch.load(tmp_path / "split" / "analysis" / name, weights_only=False)
        assert a.keys() == b.keys()
        for key in a:
            same = torch.equal(a[key], b[key]) if isinstance(a[key], torch.Tensor) else a[key] == b[key]
            assert same, f"{name}: {key} differs"


@pytest.mark.slow
@pytest.mark.ddp
def test_two_process_run_killed_mid_epoch_resumes_to_the_same_weights(tmp_path):
    """DDP on CPU: the whole process group is killed (SIGKILL) mid-epoch and resumed."""
    ddp = ["trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu"]
    env = {k: v for k, v in cli_env().items() if not k.startswith(("SLURM_", "LOCAL_RANK", "RANK", "WORLD_SIZE"))}
    whole = subprocess.run(cli(tmp_path / "whole", *ddp), cwd=tmp_path, env=env, capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr[-3000:]
    marker = tmp_path / "split.paused"
    pause = f"+callbacks.pause={{_target_:tests.resume_helpers.PauseAt,step:7,marker:'{marker}'}}"
    proc = subprocess.Popen(cli(tmp_path / "split", *ddp, pause), cwd=tmp_path, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the DDP run never reached step 7"
        time.sleep(0.1)
    time.sleep(0.5)  # both ranks are held at step 7 (the marker is touched by each)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = subprocess.run(cli(tmp_path / "split", *ddp), cwd=tmp_path, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = results(tmp_path / "whole"), results(tmp_path / "split")
    assert b["resumes"][0]["global_step"] == 6 and b["history"] == a["history"]
    assert_same_weights(tmp_path / "whole", tmp_path / "split")


class LightningStopsOnSigterm(L.Callback):
    """What Lightning does under DDP after SIGTERM: SIGTERMException at the next batch start."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            from lightning.pytorch.utilities.exceptions import SIGTERMException

            raise SIGTERMException()


def test_lightnings_own_sigterm_stop_is_recorded_as_the_interruption(make_cfg, tmp_path):
    cfg = make_cfg(["trainer.limit_train_batches=4", "callbacks.triplet_space=null",
                    "callbacks.retrieval_examples=null", f"paths.output_dir={tmp_path}"])
    run = build_run(cfg, resolve_run_dir(cfg))
    run.trainer.callbacks[:0] = [SignalAt(2, signal.SIGTERM), LightningStopsOnSigterm(2)]
    with pytest.raises(RunInterrupted) as stop:
        run.execute()
    assert stop.value.signum == signal.SIGTERM
    saved = results(tmp_path)
    assert saved["status"] == "interrupted" and saved["signal"] == "SIGTERM"
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True, mmap=True)["global_step"] == 2
