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


def test_model_and_data_come_from_the_run_unless_chosen(make_cfg, tmp_path):
    from omegaconf import OmegaConf

    from hardneg.evaluate import with_run_config

    result = train(make_cfg(["data.max_classes=14"]))
    ckpt = f"{result['run_dir']}/checkpoints/last.ckpt"
    cfg = make_cfg([f"ckpt={ckpt}", "data.max_classes=20", "model.dim=16"], config_name="evaluate")
    taken = with_run_config(cfg)
    run_cfg = OmegaConf.load(f"{result['run_dir']}/config.yaml")
    assert taken.data.max_classes == 14 and taken.model == run_cfg.model
    kept = with_run_config(cfg, chosen=["data"])
    assert kept.data.max_classes == 20 and kept.model == run_cfg.model
    # A checkpoint evaluated with its own run's data reproduces the run's numbers.
    assert evaluate(taken, tmp_path / "eval") == pytest.approx(result["final"], abs=1e-6)


def test_foreign_targets_in_the_run_config_are_refused(make_cfg, tmp_path):
    from omegaconf import OmegaConf

    from hardneg.errors import ConfigError
    from hardneg.evaluate import with_run_config

    run_dir = tmp_path / "elsewhere"
    (run_dir / "checkpoints").mkdir(parents=True)
    run_cfg = make_cfg()
    run_cfg.data._target_ = "os.system"
    OmegaConf.save(run_cfg, run_dir / "config.yaml")
    cfg = make_cfg([f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}"], config_name="evaluate")
    with pytest.raises(ConfigError, match=r"data\._target_=os\.system.*allow_foreign_targets=true"):
        with_run_config(cfg)
    cfg.allow_foreign_targets = True
    assert with_run_config(cfg).data._target_ == "os.system"
    assert with_run_config(make_cfg([f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}", "allow_foreign_targets=false"],
                                    config_name="evaluate"), chosen=["data"]).data._target_.startswith("hardneg.")


def test_a_checkpoint_with_pickled_objects_needs_trust(tmp_path):
    import argparse

    from hardneg.evaluate import load_state_dict

    path = tmp_path / "odd.ckpt"
    torch.save({"state_dict": {"net.w": torch.zeros(2)}, "extra": argparse.Namespace(a=1)}, path)
    with pytest.raises(UserError, match="trust_checkpoint=true"):
        load_state_dict(path)
    assert list(load_state_dict(path, trust=True)) == ["net.w"]


def test_load_from_checkpoint_rebuilds_the_module_from_the_file_alone(make_cfg, tmp_path):
    import shutil

    from hardneg.module import MetricLearningModule

    cfg = make_cfg(["loss=proxy_anchor", "model.dim=16"])  # a loss with state of its own (proxies)
    result = train(cfg)
    # Copied away from its run directory: no config.yaml next to it.
    ckpt = shutil.copy(f"{result['run_dir']}/checkpoints/last.ckpt", tmp_path / "alone.ckpt")
    checkpoint = torch.load(ckpt, weights_only=True)  # plain values only, loadable as data
    assert checkpoint["hyper_parameters"]["run_config"]["model"]["dim"] == 16
    module = MetricLearningModule.load_from_checkpoint(ckpt)
    assert not module.training
    weights = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    from hardneg.builders import build_net

    reference, _ = build_net(make_cfg(["model.dim=16"]))
    reference.load_state_dict(weights)
    reference.eval()
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(module(x), reference(x))
    assert torch.equal(module.criterion.loss.proxies, checkpoint["state_dict"]["criterion.loss.proxies"])


def test_load_from_checkpoint_refuses_foreign_targets_in_the_saved_config(make_cfg, tmp_path):
    from hardneg.errors import ConfigError
    from hardneg.module import MetricLearningModule

    result = train(make_cfg())
    checkpoint = torch.load(f"{result['run_dir']}/checkpoints/last.ckpt", weights_only=True)
    checkpoint["hyper_parameters"]["run_config"]["model"]["_target_"] = "os.system"
    torch.save(checkpoint, tmp_path / "odd.ckpt")
    with pytest.raises(ConfigError, match=r"model\._target_=os\.system.*allow_foreign_targets=True"):
        MetricLearningModule.load_from_checkpoint(tmp_path / "odd.ckpt")


def test_a_checkpoint_without_a_saved_config_is_named(tmp_path):
    from hardneg.module import MetricLearningModule

    torch.save({"state_dict": {"net.w": torch.zeros(2)}}, tmp_path / "old.ckpt")
    with pytest.raises(UserError, match="holds no run config"):
        MetricLearningModule.load_from_checkpoint(tmp_path / "old.ckpt")
