"""Config mistakes stop before anything is built: exit code 2, no traceback, a message naming the
key, the bad value and what is valid (hardneg/validate.py, hardneg/schema.py)."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from hardneg.config import compose
from hardneg.errors import ConfigError
from hardneg.schema import CODE_CHOICES, code
from hardneg.validate import problems, validate, validate_data

REPO = Path(__file__).resolve().parents[1]
# The shrunk run of conftest.py's FAST_OVERRIDES, spelled for the command line.
FAST = [
    "model=tiny", "data.max_classes=12", "data.image_size=32", "data.batch_size=12", "data.images_per_font=1",
    "trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.enable_progress_bar=false",
    "logger=none", "callbacks.progress_bar=null",
]


def run_cli(args, cwd, timeout=120):
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="offline", PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "hardneg.run", *args], capture_output=True, text=True, env=env, cwd=cwd,
        timeout=timeout,
    )


@pytest.fixture
def a_file(tmp_path):
    """A regular file: a directory below it cannot be created, even by root."""
    path = tmp_path / "a_file"
    path.write_text("not a directory")
    return path


# (overrides, what the message must contain). Every case is a mistake the issue lists.
CLI_CASES = {
    "unknown choice": (["loss.hard_rule=sometimes"], ["loss.hard_rule", "'sometimes'", "'paper'", "'official'"]),
    "not an integer": (["data.batch_size=abc"], ["data.batch_size", "'abc'", "an integer"]),
    "batch not whole classes": (
        ["data.batch_size=33", "data.samples_per_class=2"],
        ["data.batch_size=33", "data.samples_per_class=2", "multiple", "data.batch_size=32 or 34"],
    ),
    "unknown eval backend": (["eval.backend=nope"], ["eval.backend", "'nope'", "'torch'"]),
    "adding a key that exists": (["+eval.nmi=true"], ["eval.nmi=", "without the '+'"]),
    "unknown top-level key": (["+seeed=1"], ["seeed", "did you mean 'seed'"]),
    "typo in a group key": (["loss.hard_rul=paper"], ["loss.hard_rul", "did you mean 'hard_rule'"]),
    "typo in an added group key": (["+loss.hard_rul=paper"], ["loss.hard_rul", "did you mean 'hard_rule'"]),
    "unknown group option": (["data=cubb"], ["data='cubb'", "did you mean 'cub'", "'sop'"]),
    "unknown experiment": (["experiment=paper/cub_sctt"], ["experiment='paper/cub_sctt'", "paper/cub_sct"]),
    "negative lr": (["optim.optimizer.lr=-0.1"], ["optim.optimizer.lr=-0.1", "> 0"]),
    "zero epochs": (["trainer.max_epochs=0"], ["trainer.max_epochs=0", ">= 1"]),
    # ++: sets the key whether or not config.yaml declares it yet.
    "negative nonfinite budget": (["++max_consecutive_nonfinite=-1"], ["max_consecutive_nonfinite=-1", ">= 0"]),
    "target outside the allowed namespaces": (["loss._target_=os.system"], ["loss._target_", "HARDNEG_ALLOW_TARGETS"]),
}


@pytest.mark.parametrize("case", list(CLI_CASES), ids=list(CLI_CASES))
def test_cli_config_mistake_exits_2_with_a_message_before_any_run_dir(case, tmp_path):
    overrides, expected = CLI_CASES[case]
    proc = run_cli([*FAST, *overrides], cwd=tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "Traceback" not in output
    assert "hardneg: error:" in proc.stderr
    for text in expected:
        assert text in output, f"{text!r} not in:\n{output}"
    assert not (tmp_path / "outputs").exists(), "validation must run before Hydra creates the run directory"


@pytest.mark.parametrize("key", ["paths.output_dir", "hydra.run.dir"])
def test_cli_unwritable_output_dir_names_the_dir_and_the_fix(key, a_file, tmp_path):
    target = a_file / "run"
    proc = run_cli([*FAST, f"{key}={target}"], cwd=tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "Traceback" not in output
    assert str(target) in output and str(a_file) in output and "writable directory" in output and key in output


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_output_dir_is_reported(tmp_path):
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        found = problems(compose([f"paths.output_dir={read_only / 'run'}"]))
    finally:
        read_only.chmod(0o755)
    assert any("not writable" in p and str(read_only) in p for p in found)


def test_run_dir_that_cannot_be_written_is_a_user_error(a_file):
    """The last line of defence (a directory that turns unwritable after validation)."""
    from hardneg.errors import UserError
    from hardneg.run import resolve_run_dir

    cfg = compose([f"paths.output_dir={a_file / 'run'}"])
    with pytest.raises(UserError, match="cannot write the run directory"):
        resolve_run_dir(cfg)


def test_recall_k_larger_than_the_gallery_stops_before_training(make_cfg):
    from hardneg.run import train

    cfg = make_cfg(["data.recall_ks=[1,5000]"])
    with pytest.raises(ConfigError, match=r"data.recall_ks=\[1, 5000\]: recall@5000 .* references"):
        train(cfg)
    assert not list(Path(cfg.paths.output_dir).rglob("*.ckpt"))


@pytest.mark.slow
def test_cli_recall_k_larger_than_the_gallery_stops_before_training(tmp_path):
    proc = run_cli([*FAST, "data.recall_ks=[1,5000]", f"paths.cache_dir={tmp_path / 'cache'}"], cwd=tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "Traceback" not in output
    assert "data.recall_ks=[1, 5000]" in output and "recall@5000" in output and "references" in output
    assert not list(tmp_path.rglob("results.json")) and not list(tmp_path.rglob("*.ckpt"))


# -- in-process: every shipped config is valid, and the checks say what they should -------------------


def shipped_choices():
    conf = REPO / "conf"
    for group in ("data", "model", "loss", "mining", "optim", "trainer", "logger", "callbacks"):
        for file in sorted((conf / group).glob("*.yaml")):
            yield f"{group}={file.stem}"
    for file in sorted((conf / "experiment").rglob("*.yaml")):
        yield f"experiment={file.relative_to(conf / 'experiment').with_suffix('').as_posix()}"


@pytest.mark.parametrize("override", ["", *shipped_choices()])
def test_every_shipped_config_is_valid(override):
    assert problems(compose([override] if override else [])) == []


@pytest.mark.parametrize("name", sorted(CODE_CHOICES))
def test_schema_choices_are_the_codes_own_constants(name):
    module, constant = CODE_CHOICES[name]
    defined = getattr(importlib.import_module(module), constant)
    choices = code(name).choices
    assert choices is not None, f"{module}.{constant} is not a literal tuple/dict any more"
    assert set(choices) == set(defined)


def test_all_problems_are_reported_at_once():
    with pytest.raises(ConfigError) as err:
        validate(compose(["loss.hard_rule=sometimes", "trainer.max_epochs=0", "eval.backend=nope"]))
    message = str(err.value)
    assert "3 problems" in message
    assert all(key in message for key in ("loss.hard_rule", "trainer.max_epochs", "eval.backend"))


def test_keys_come_from_the_targets_constructor():
    """Any keyword the target takes is accepted; a key it does not take is named with the valid ones."""
    assert problems(compose(["trainer.precision=16-mixed", "+trainer.gradient_clip_val=1.0"])) == []
    found = problems(compose(["optim.optimizer._target_=torch.optim.Adam"]))
    assert found and "optim.optimizer.momentum" in found[0] and "torch.optim.Adam" in found[0]
    assert problems(compose(["optim.optimizer._target_=torch.optim.Adam", "~optim.optimizer.momentum"])) == []


def test_unknown_hardneg_class_gets_a_suggestion():
    found = problems(compose(["loss._target_=hardneg.losses.SCTLos"]))
    assert found and "did you mean 'hardneg.losses.SCTLoss'" in found[0]


def test_own_namespace_can_be_allowed(monkeypatch):
    cfg = compose(["callbacks.collapse._target_=mypackage.Thing"])
    assert any("HARDNEG_ALLOW_TARGETS" in p for p in problems(cfg))
    monkeypatch.setenv("HARDNEG_ALLOW_TARGETS", "mypackage")
    assert problems(cfg) == []


def test_type_range_and_cross_key_rules():
    assert problems(compose(["loss=proxy_anchor"])) == []  # num_classes=??? is filled in from the data
    assert any("model.cache_features" in p for p in problems(compose(["model.freeze_backbone=false"])))
    found = problems(compose(["trainer=ddp", "trainer.devices=4", "data.batch_size=36", "data.samples_per_class=2"]))
    assert any("18 classes" in p and "4 processes" in p for p in found)
    assert any("data.recall_ks" in p for p in problems(compose(["data.recall_ks=[1,0]"])))
    assert any("did you mean 'official'" in p for p in problems(compose(["loss.hard_rule=oficial"])))
    # What a sweeper optimises must be a metric the run reports (else main returns None to it).
    assert any("optimized_metric='recall@3'" in p for p in problems(compose(["optimized_metric=recall@3"])))
    assert any("optimized_metric='nmi'" in p for p in problems(compose(["optimized_metric=nmi"])))
    assert problems(compose(["optimized_metric=nmi", "eval.nmi=true"])) == []


def test_eval_nmi_true_reports_nmi_at_every_evaluation(make_cfg):
    from hardneg.run import train

    assert compose([]).eval.nmi is False  # off by default: k-means is slow at SOP scale
    result = train(make_cfg(["eval.nmi=true"]))
    assert [epoch for epoch, _ in result["history"]] == [0, 1]
    for _, metrics in result["history"]:
        assert 0.0 <= metrics["nmi"] <= 1.0


# -- after the data is read ---------------------------------------------------------------------------


def fake_datamodule(n_test, recall_ks, is_query=None, protocol="loo"):
    labels = torch.arange(n_test) // 2
    train = torch.arange(40) // 4  # 10 classes of 4 images
    splits = SimpleNamespace(train=SimpleNamespace(labels=train), test=SimpleNamespace(labels=labels, is_query=is_query))
    return SimpleNamespace(
        splits=splits, recall_ks=recall_ks, protocol=protocol, batch_size=8, samples_per_class=2,
        sampler="sampled", repeat=1, seed=0,
    )


def test_sop_default_k_1000_on_a_small_split_stops_with_the_gallery_size():
    cfg = compose(["data=sop"])
    with pytest.raises(ConfigError, match=r"recall@1000 .*299 references"):
        validate_data(cfg, fake_datamodule(300, list(cfg.data.recall_ks)))
    validate_data(cfg, fake_datamodule(1001, list(cfg.data.recall_ks)))  # 1000 references: fine


def test_query_gallery_k_is_checked_against_the_gallery():
    is_query = torch.tensor([True] * 20 + [False] * 9)
    with pytest.raises(ConfigError, match="gallery has 9 images"):
        validate_data(compose([]), fake_datamodule(29, [1, 10], is_query, protocol="query_gallery"))


def test_batch_asking_for_more_classes_than_the_split_has_stops_before_training():
    dm = fake_datamodule(100, [1, 2])
    dm.batch_size = 40  # 20 classes x 2, the split has 10
    with pytest.raises(ConfigError, match="data.batch_size=40 asks for 20 classes"):
        validate_data(compose([]), dm)


def test_validation_imports_neither_torch_nor_lightning():
    """What keeps it fast: the check runs before the seconds that importing torch/Lightning take."""
    code_ = (
        "import sys\n"
        "from hardneg.config import compose\n"
        "from hardneg.validate import problems\n"
        "assert problems(compose(['trainer=ddp', 'loss=proxy_anchor'])) == []\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning', 'timm'))\n"
        "print(heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code_], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
