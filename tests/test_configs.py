"""Every config file composes; presets set what they promise."""
from pathlib import Path

import pytest

from hardneg.config import compose, config_dir

CONF = config_dir()
EXPERIMENTS = sorted(str(p.relative_to(CONF / "experiment").with_suffix("")) for p in (CONF / "experiment").rglob("*.yaml"))


def group_options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["data", "model", "loss", "mining", "optim", "memory", "trainer", "logger", "callbacks"])
def test_every_option_of_every_group_composes(group):
    options = group_options(group)
    assert options, f"conf/{group}/ is empty"
    for option in options:
        cfg = compose([f"{group}={option}"])
        assert cfg[group] is not None


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_presets_compose(name):
    cfg = compose([f"experiment={name}"])
    assert cfg.loss and cfg.mining and cfg.data


def test_paper_recipe_matches_the_official_table():
    cfg = compose(["experiment=paper/cars_sct"])
    assert cfg.model.backbone == "resnet50.tv_in1k" and cfg.model.dim == 64
    assert cfg.data.batch_size == 128 and cfg.trainer.max_epochs == 80
    assert cfg.optim.optimizer.lr == pytest.approx(2e-2) and list(cfg.optim.scheduler.milestones) == [40]
    shn = compose(["experiment=paper/sop_shn"])
    assert shn.loss._target_.endswith("NCALoss") and shn.mining.neg == "semihard"
    assert shn.optim.optimizer.lr == pytest.approx(0.01) and shn.data.repeat == 5


def test_default_is_the_papers_method_on_glyphs():
    cfg = compose([])
    assert cfg.loss._target_ == "hardneg.losses.SCTLoss"
    assert (cfg.mining.pos, cfg.mining.neg) == ("easy", "hardest")
    assert cfg.data._target_.endswith("GlyphsDataModule") and cfg.model.pretrained


def test_config_dir_is_packaged_with_the_code():
    assert Path(CONF, "config.yaml").exists()


def test_documented_eval_options_are_config_keys():
    """NMI and the kNN backend are switched from the command line without `+`."""
    cfg = compose(["eval.nmi=true", "eval.backend=faiss"])
    assert cfg.eval.nmi is True and cfg.eval.backend == "faiss"
