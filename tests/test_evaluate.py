"""Evaluating a saved checkpoint reproduces the run's final metrics and saves embeddings."""
import pytest
import torch

from hardneg.errors import UserError
from hardneg.evaluate import evaluate
from hardneg.run import train


def test_checkpoint_evaluation_matches_the_final_metrics(make_cfg, tmp_path):
    result = train(make_cfg())
    ckpt = f"{result['run_dir']}/checkpoints/last.ckpt"
    cfg = make_cfg([f"ckpt={ckpt}"], config_name="evaluate")
    metrics = evaluate(cfg, tmp_path / "eval")
    assert metrics == pytest.approx(result["final"], abs=1e-6)
    saved = torch.load(tmp_path / "eval" / "embeddings.pt")
    assert saved["embeddings"].shape[0] == saved["labels"].shape[0] > 0


def test_missing_checkpoint_is_named(make_cfg, tmp_path):
    cfg = make_cfg([f"ckpt={tmp_path / 'nope.ckpt'}"], config_name="evaluate")
    with pytest.raises(UserError, match="nope.ckpt does not exist"):
        evaluate(cfg, tmp_path / "eval")
