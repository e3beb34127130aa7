"""Figures and raw analysis data from real (shrunk) runs, under every logger; analyze redraws them."""
import csv
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import torch

from hardneg.analyze import main as analyze_main
from hardneg.analyze import regenerate
from hardneg.callbacks import TripletSpaceCallback
from hardneg.criterion import Criterion
from hardneg.evaluation import evaluate_embeddings
from hardneg.losses import MarginTripletLoss, SCTLoss
from hardneg.mining import TripletMiner
from hardneg.run import train

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


def fake_module(loss=None):
    return SimpleNamespace(criterion=Criterion(loss or SCTLoss(threshold=0.7), TripletMiner()), last_train_stats={},
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
