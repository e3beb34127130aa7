"""CollapseDetector: fires on constant embeddings, not on random unit vectors; explains itself."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from hardneg.callbacks import CollapseDetector
from hardneg.criterion import Criterion
from hardneg.evaluation import evaluate_embeddings
from hardneg.losses import NCALoss
from hardneg.mining import TripletMiner


def fake_run():
    # The last training step's stats reach the detector the way Lightning keeps logged values.
    logged = {"train/hn_ratio": torch.tensor(0.47), "train/s_ap": torch.tensor(0.99), "train/s_an": torch.tensor(0.99)}
    trainer = SimpleNamespace(sanity_checking=False, should_stop=False, is_global_zero=True,
                              state=SimpleNamespace(fn="fit"), callback_metrics=logged)
    module = SimpleNamespace(criterion=Criterion(NCALoss(), TripletMiner("easy", "hardest")), summary={})
    return trainer, module


def evaluate(detector, trainer, module, epoch, embeddings):
    labels = torch.arange(len(embeddings)) % 5
    detector.on_evaluation(trainer, module, evaluate_embeddings(embeddings, labels, epoch=epoch, ks=(1,)))


def constant(n=40, d=16):
    return F.normalize(torch.ones(n, d), dim=1)


def random_unit(n=40, d=16, seed=0):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=1)


def test_fires_on_constant_embeddings_and_stops_with_an_explanation(caplog):
    trainer, module = fake_run()
    detector = CollapseDetector(threshold=0.9, patience=2, action="stop")
    evaluate(detector, trainer, module, 0, random_unit())
    evaluate(detector, trainer, module, 10, constant())
    assert not trainer.should_stop  # patience 2: one evaluation is not enough
    with caplog.at_level("WARNING", logger="hardneg"):
        evaluate(detector, trainer, module, 20, constant())
    assert trainer.should_stop
    record = module.summary["collapse"]
    assert record["collapsed"] and record["since_epoch"] == 10 and record["detected_epoch"] == 20
    assert record["loss"].startswith("NCALoss") and record["mining"] == "easy positive / hardest negative"
    assert record["hn_ratio"] == pytest.approx(0.47) and record["effective_rank"] == pytest.approx(1.0, abs=1e-3)
    assert record["recall_at_1"] is not None
    message = caplog.text
    for words in ("collapse", "epoch 10", "NCALoss", "hardest negative", "hn_ratio 0.470", "loss=sct", "Stopping"):
        assert words in message


def test_does_not_fire_on_random_unit_vectors():
    trainer, module = fake_run()
    detector = CollapseDetector(threshold=0.9, patience=1)
    for epoch in range(4):
        evaluate(detector, trainer, module, epoch * 10, random_unit(seed=epoch))
    assert not trainer.should_stop and module.summary["collapse"]["collapsed"] is False
    assert len(module.summary["collapse"]["mean_similarity"]) == 4


def test_epoch_zero_is_a_baseline_not_a_verdict():
    """A random head may already map everything together; that is not training's doing."""
    trainer, module = fake_run()
    detector = CollapseDetector(threshold=0.9, patience=1)
    evaluate(detector, trainer, module, 0, constant())
    assert not trainer.should_stop and not module.summary["collapse"]["collapsed"]


def test_continue_records_but_does_not_stop_and_notes_recovery():
    trainer, module = fake_run()
    detector = CollapseDetector(threshold=0.9, patience=1, action="continue")
    evaluate(detector, trainer, module, 1, constant())
    assert not trainer.should_stop and module.summary["collapse"]["collapsed"]
    assert "continues" in module.summary["collapse"]["message"]
    evaluate(detector, trainer, module, 2, random_unit())
    assert module.summary["collapse"]["recovered_epoch"] == 2


def test_an_interrupted_streak_starts_over():
    trainer, module = fake_run()
    detector = CollapseDetector(threshold=0.9, patience=2)
    for epoch, e in enumerate([constant(), random_unit(), constant()], start=1):
        evaluate(detector, trainer, module, epoch, e)
    assert not trainer.should_stop


@pytest.mark.parametrize("kwargs", [{"action": "explode"}, {"threshold": 1.5}, {"patience": 0}])
def test_bad_options_are_rejected_by_name(kwargs):
    with pytest.raises(ValueError, match="callbacks.collapse"):
        CollapseDetector(**kwargs)
