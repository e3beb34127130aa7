"""Figures and raw analysis data from real (shrunk) runs, under every logger; analyze redraws them."""
import csv
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import torch

from hardneg.analysis import artifacts
from hardneg.analysis.triplet_diagram import TripletCounts, make_train_diagram
from hardneg.analyze import main as analyze_main
from hardneg.analyze import regenerate
from hardneg.builders import build_run
from hardneg.callbacks import TripletSpaceCallback
from hardneg.criterion import Criterion
from hardneg.evaluation import evaluate_embeddings
from hardneg.losses import MarginTripletLoss, SCTLoss
from hardneg.mining import TripletMiner
from hardneg.run import resolve_run_dir, train

FIGURES = [
    "gradient_field.png", "hn_ratio.png", "collapse.png", "train_triplets/epoch_001.png",
    "test_triplets/epoch_000.png", "test_triplets/epoch_001.png", "retrieval/epoch_000.png", "retrieval/epoch_001.png",
]


def assert_figures(folder: Path):
    for name in FIGURES:
        assert (folder / name).stat().st_size > 5_000, name


def test_figures_and_raw_data_without_a_logger_then_analyze_redraws_them(make_cfg):
    result = train(make_cfg())  # logger=none
    run_dir = Path(result["run_dir"])
    assert_figures(run_dir / "figures")
    saved = sorted(p.name for p in (run_dir / "analysis").iterdir())
    assert saved == ["embeddings_epoch_000.pt", "embeddings_epoch_001.pt", "test_epoch_000.pt", "test_epoch_001.pt",
                     "train_epoch_001.pt"]
    geometry = json.loads((run_dir / "results.json").read_text())["summary"]["test_geometry"]
    assert set(geometry) == {"0", "1"} and set(geometry["1"]) >= {"mean_similarity", "effective_rank", "dims_in_use"}

    shutil.rmtree(run_dir / "figures")
    paths = regenerate(run_dir)
    assert_figures(run_dir / "figures")
    assert len(paths) == len(FIGURES)


def test_wandb_offline_receives_the_figures_as_images(make_cfg):
    result = train(make_cfg(["logger=wandb", "logger.mode=offline", "callbacks.retrieval_examples=null"]))
    run_dir = Path(result["run_dir"])
    assert (run_dir / "figures" / "test_triplets" / "epoch_001.png").stat().st_size > 5_000
    media = [p.name for p in run_dir.glob("wandb/offline-run-*/files/media/images/**/*.png")]
    for key in ("gradient_field", "train_triplets", "test_triplets", "hn_ratio", "collapse"):
        assert any(name.startswith(key) for name in media), (key, media)


def test_collapse_detector_stops_the_run_and_csv_gets_the_diagnostics(make_cfg):
    # A threshold every embedding exceeds: exercises the wiring (stop, summary, results.json) end to end.
    overrides = ["logger=csv", "trainer.max_epochs=4", "trainer.check_val_every_n_epoch=1",
                 "callbacks.collapse.threshold=-0.99", "callbacks.collapse.patience=1",
                 "callbacks.retrieval_examples=null", "callbacks.triplet_space.gradient_field=false"]
    result = train(make_cfg(overrides))
    assert [epoch for epoch, _ in result["history"]] == [0, 1]
    record = result["summary"]["collapse"]
    assert record["collapsed"] and record["detected_epoch"] == 1 and "Stopping training" in record["message"]
    run_dir = Path(result["run_dir"])
    assert json.loads((run_dir / "results.json").read_text())["summary"]["collapse"]["detected_epoch"] == 1
    columns = next(csv.reader(open(run_dir / "csv" / "metrics.csv")))
    assert {"test/mean_similarity", "test/effective_rank", "test/dims_in_use"} <= set(columns)
    assert record["mean_similarity"]["1"] == round(result["summary"]["test_geometry"]["1"]["mean_similarity"], 5)


def test_analyze_explains_a_directory_without_analysis_data(tmp_path, capsys):
    try:
        analyze_main([f"run_dir={tmp_path}"])
    except SystemExit as stop:
        assert stop.code == 2
    assert "triplet_space" in capsys.readouterr().err


def fake_module(loss=None, scope="local"):
    return SimpleNamespace(criterion=Criterion(loss or SCTLoss(threshold=0.7), TripletMiner(scope=scope)),
                           last_train_stats={},
                           device=torch.device("cpu"), all_gather=lambda t: torch.stack([t, t]), summary={})


def test_a_skipped_step_is_not_counted_twice_and_ranks_are_summed():
    callback, module = TripletSpaceCallback(bins=4), fake_module()
    trainer = SimpleNamespace(world_size=1)
    callback.on_train_epoch_start(trainer, module)
    assert callback._counts.threshold == 0.7 and callback._counts.sct  # the run's SCT threshold is drawn
    module.last_train_stats = {"points": torch.tensor([[0.1, 0.5], [0.9, -0.2]])}
    callback.on_train_batch_end(trainer, module, None, None, 0)
    callback.on_train_batch_end(trainer, module, None, None, 1)  # a non-finite step keeps the old stats
    assert callback._counts.count == 2 and callback._counts.hard == 1
    both = callback._reduce_over_ranks(SimpleNamespace(world_size=2), module, callback._counts)
    assert both.count == 4 and both.hard == 2 and int(both.hist.sum()) == 4
    assert both.sct and both.threshold == 0.7
    # mining.scope=global: every rank's stats are already the pooled ones of all ranks, kept as they are
    pooled = callback._reduce_over_ranks(SimpleNamespace(world_size=2), fake_module(scope="global"), callback._counts)
    assert pooled.count == 2 and torch.equal(pooled.hist, callback._counts.hist)


def test_only_an_sct_run_gets_the_threshold_line_in_training_and_test_diagrams(tmp_path):
    """The loss decides: its threshold line is kept for SCT, dropped (None) for any other loss, in
    the training counts and in the saved test record that ``hardneg.analyze`` redraws from."""
    collapsed = torch.nn.functional.normalize(torch.ones(12, 4), dim=1)
    evaluation = evaluate_embeddings(collapsed, torch.arange(12) % 3, epoch=0, ks=(1,))
    for name, loss, line in (("sct", SCTLoss(threshold=0.7), 0.7), ("margin", MarginTripletLoss(), None)):
        callback, module = TripletSpaceCallback(bins=10, keep_embeddings="none"), fake_module(loss)
        trainer = SimpleNamespace(world_size=1, is_global_zero=True, default_root_dir=str(tmp_path / name),
                                  loggers=[])
        callback.on_train_epoch_start(trainer, module)
        assert callback._counts.sct == (line is not None)
        callback.on_evaluation(trainer, module, evaluation)
        record = torch.load(tmp_path / name / "analysis" / "test_epoch_000.pt", weights_only=True)
        assert record["threshold"] == line
        assert (tmp_path / name / "figures" / "test_triplets" / "epoch_000.png").stat().st_size > 5_000


# -- cross-batch memory: bank negatives counted apart -------------------------------------------
def test_bank_flags_are_counted_apart_summed_over_ranks_and_checkpointed(tmp_path):
    callback, module = TripletSpaceCallback(bins=4), fake_module()
    trainer = SimpleNamespace(world_size=1)
    callback.on_train_epoch_start(trainer, module)
    module.last_train_stats = {"points": torch.tensor([[0.1, 0.5], [0.9, -0.2]])}  # before memory.start_step
    callback.on_train_batch_end(trainer, module, None, None, 0)
    assert callback._counts.bank is None
    module.last_train_stats = {"points": torch.tensor([[0.1, 0.5], [0.2, 0.8], [0.9, 0.1]]),
                               "bank_negative": torch.tensor([True, True, False])}
    callback.on_train_batch_end(trainer, module, None, None, 1)
    counts = callback._counts
    assert (counts.count, counts.hard, counts.bank.count, counts.bank.hard) == (5, 3, 2, 2)
    assert counts.in_batch().count == 3 and counts.in_batch().hard == 1
    both = callback._reduce_over_ranks(SimpleNamespace(world_size=2), module, counts)
    assert (both.count, both.hard, both.bank.count, both.bank.hard) == (10, 6, 4, 4)
    assert torch.equal(both.bank.hist, 2 * counts.bank.hist) and both.bank.sct and both.bank.threshold == 0.7
    plain = TripletCounts(4, 0.7)
    plain.add(torch.tensor([[0.1, 0.5]]))
    assert callback._reduce_over_ranks(SimpleNamespace(world_size=2), module, plain).bank is None  # no memory

    callback._history = [(1, both)]
    torch.save(callback.state_dict(), tmp_path / "state.pt")
    restored = TripletSpaceCallback(bins=4)
    restored.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert restored._counts.summary() == counts.summary() and torch.equal(restored._counts.bank.hist, counts.bank.hist)
    assert restored._history[0][1].summary() == both.summary()


class StatsRecorder(L.Callback):
    """Copies of every training step's mined points and bank flags."""

    def __init__(self):
        self.steps = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        stats = pl_module.last_train_stats
        self.steps.append((stats["points"].clone(), stats.get("bank_negative")))


def test_a_memory_run_draws_in_batch_and_bank_panels_from_its_steps_flags(make_cfg):
    cfg = make_cfg(["memory=xbm", "memory.size=30", "eval.at_start=false",
                    "callbacks.retrieval_examples=null", "callbacks.triplet_space.gradient_field=false"])
    run = build_run(cfg, resolve_run_dir(cfg))
    recorder = StatsRecorder()
    run.trainer.callbacks.insert(0, recorder)
    run.execute()
    run_dir = Path(run.trainer.default_root_dir)
    (epoch, counts), = artifacts.load_train_counts(run_dir)
    assert epoch == 1 and len(recorder.steps) == 3 and recorder.steps[0][1] is None  # step 1: the bank is empty
    points = torch.cat([p for p, _ in recorder.steps])
    flags = torch.cat([torch.zeros(len(p), dtype=torch.bool) if f is None else f for p, f in recorder.steps])
    assert counts.count == len(points) and counts.bank.count == int(flags.sum()) > 0
    assert counts.bank.hard == int((points[flags, 1] > points[flags, 0]).sum())
    assert counts.in_batch().hard == int((points[~flags, 1] > points[~flags, 0]).sum())
    assert (run_dir / "figures" / "train_triplets" / "epoch_001.png").stat().st_size > 5_000
    fig = make_train_diagram(counts, "redrawn")  # what `hardneg.analyze` draws from the saved counts
    assert [ax.get_gid() for ax in fig.axes if ax.get_xlabel().startswith("S_ap")] == ["in_batch", "bank"]
