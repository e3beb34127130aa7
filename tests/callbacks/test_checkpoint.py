"""ResumableCheckpoint and the analysis callbacks' saved state, without a training loop."""
from __future__ import annotations

import signal
from types import SimpleNamespace

import pytest
import torch

from hardneg import resume
from hardneg.analysis.triplet_diagram import TripletCounts
from hardneg.callbacks import CollapseDetector, TripletSpaceCallback
from hardneg.callbacks.checkpoint import ResumableCheckpoint


class FakeTrainer:
    """What ResumableCheckpoint.save uses: writes the module's weights like trainer.save_checkpoint."""

    def __init__(self, run_dir, module, global_step=7):
        self.default_root_dir, self.module, self.global_step = str(run_dir), module, global_step
        self.is_global_zero, self.world_size = True, 1
        self.strategy = SimpleNamespace(barrier=lambda name: None)
        self.writes = 0

    def save_checkpoint(self, path, weights_only=False):
        self.writes += 1
        torch.save({"state_dict": self.module.state_dict(), "global_step": self.global_step}, path)


def test_last_ckpt_is_replaced_whole_and_never_by_nonfinite_weights(tmp_path, caplog):
    module = torch.nn.Linear(3, 2)
    trainer = FakeTrainer(tmp_path, module)
    (tmp_path / "checkpoints").mkdir()
    callback = ResumableCheckpoint()
    path = callback.save(trainer, module)
    assert path == tmp_path / "checkpoints" / "last.ckpt"
    assert not list((tmp_path / "checkpoints").glob(".*tmp"))  # written aside, then renamed over
    good = torch.load(path, weights_only=True)["state_dict"]["weight"].clone()
    assert callback.save(trainer, module) == path and trainer.writes == 1  # same step: not written again

    with torch.no_grad():
        module.weight[0, 0] = float("nan")
    trainer.global_step = 8
    assert callback.save(trainer, module) is None
    assert "hold NaN/inf" in caplog.text and "weight" in caplog.text
    assert torch.equal(torch.load(path, weights_only=True)["state_dict"]["weight"], good)


def test_a_signal_is_recorded_and_handlers_are_put_back(monkeypatch):
    callback = ResumableCheckpoint()
    before = signal.getsignal(signal.SIGUSR1)
    callback.on_fit_start(None, None)
    try:
        assert signal.getsignal(signal.SIGUSR1) == callback._on_signal
        signal.raise_signal(signal.SIGUSR1)
        assert callback._pending_signal == signal.SIGUSR1
        callback._pending_signal = signal.SIGINT
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl+C stops at once
            callback._on_signal(signal.SIGINT, None)
    finally:
        callback.restore_signal_handlers()
    assert signal.getsignal(signal.SIGUSR1) == before


def test_rng_state_round_trips_through_a_weights_only_load(tmp_path):
    import random

    import numpy as np

    state = resume.rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1))
    torch.save(state, tmp_path / "rng.pt")
    resume.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected


def test_config_differences_name_result_keys_only():
    saved = {"loss": {"tau": 0.1}, "trainer": {"max_epochs": 10, "deterministic": True},
             "paths": {"output_dir": "a"}, "callbacks": {"progress_bar": {"refresh_rate": 1},
                                                         "collapse": {"threshold": 0.9}}}
    current = {"loss": {"tau": 0.2}, "trainer": {"max_epochs": 80, "deterministic": True},
               "paths": {"output_dir": "b"}, "callbacks": {"collapse": {"threshold": 0.8}}, "seed": 1}
    diffs = resume.config_differences(saved, current)
    assert [d[0] for d in diffs] == ["callbacks.collapse.threshold", "loss.tau", "seed"]
    assert diffs[-1] == ("seed", "<absent>", 1)


def test_collapse_detector_keeps_its_patience_across_a_resume():
    detector = CollapseDetector(threshold=0.9, patience=2)
    detector.history = {0: {"mean_similarity": 0.5}, 1: {"mean_similarity": 0.95}}
    restored = CollapseDetector(threshold=0.9, patience=2)
    restored.load_state_dict(detector.state_dict())
    assert restored.history == detector.history and restored.fired_at is None
    assert restored._above_since() == 1  # one more evaluation above the threshold fires it


def test_triplet_space_histories_survive_a_weights_only_round_trip(tmp_path):
    callback = TripletSpaceCallback(bins=4)
    counts = TripletCounts(4, 0.8)
    counts.add(torch.tensor([[0.2, 0.9], [0.5, 0.1]]))
    callback._history = [(1, counts)]
    callback._counts = TripletCounts(4, 0.8)
    callback._evaluations = {1: {"epoch": 1, "geometry": {"mean_similarity": 0.3}, "metrics": {"recall@1": 0.5}}}
    torch.save(callback.state_dict(), tmp_path / "state.pt")
    restored = TripletSpaceCallback(bins=4)
    restored.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    (epoch, got), = restored._history
    assert epoch == 1 and got.count == 2 and got.hard == 1 and torch.equal(got.hist, counts.hist)
    assert restored._counts.count == 0 and restored._evaluations == callback._evaluations
