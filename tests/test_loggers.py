"""Loggers through ``_target_``; W&B runs named, grouped, tagged and summarised as people browse them.

The W&B checks read what the offline run wrote (``<run_dir>/wandb/offline-run-*/run-*.wandb``):
exactly what ``wandb sync`` would upload, no mocks.
"""
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hardneg.loggers import CSVLogging, WandbLogging, build_logger, run_identity, run_summary
from hardneg.run import train


def wandb_records(run_dir) -> list:
    """The protobuf records of a W&B offline run file (LevelDB-log framing: 32 KiB blocks of
    [crc32, length u16, type u8] chunks; types 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    [path] = Path(run_dir, "wandb").glob("offline-run-*/run-*.wandb")
    data, pos, block, records, pending = path.read_bytes(), 7, 32768, [], b""  # 7: the ':W&B' file header
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_run_view(run_dir, wait_s: float = 60.0) -> dict:
    """name, group, tags, config (top-level keys, JSON values) and the final summary of an offline run.

    W&B's writer process may still be flushing the file when ``finish()`` has returned: read
    until the run's closing ``exit`` record is in it."""
    deadline = time.monotonic() + wait_s
    while True:
        records = wandb_records(run_dir)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    summary = {}
    for record in records:
        if record.WhichOneof("record_type") == "summary":
            for item in record.summary.update:
                summary["/".join([item.key, *item.nested_key]).lstrip("/")] = json.loads(item.value_json)
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    return {"name": run.display_name, "group": run.run_group, "tags": list(run.tags), "config": config,
            "summary": summary}


def test_run_identity_names_the_method_and_seed_and_groups_a_sweep(make_cfg):
    cfg = make_cfg(["loss=nca", "mining=easy_semihard", "seed=3"])
    alone = run_identity(cfg)
    assert alone["name"] == "nca-easy_semihard-s3" and alone["method"] == "nca-easy_semihard"
    assert alone["data"] == "glyphs" and alone["group"] is None
    swept = run_identity(cfg, experiment="paper/cars_sct", sweep_dir="multirun/2026-12-02/14-22-00")
    assert swept["group"] == "paper/cars_sct-2026-12-02_14-22-00"
    assert run_identity(cfg, sweep_dir="multirun/2026-12-02/14-22-00")["group"] == "2026-12-02_14-22-00"
    assert run_identity(cfg, sweep_dir="multirun/cars_seeds")["group"] == "cars_seeds"
    # Two seeds of one sweep: same group, different names.
    other = run_identity(make_cfg(["loss=nca", "mining=easy_semihard", "seed=4"]), "e", "multirun/d/t")
    assert other["group"] == run_identity(cfg, "e", "multirun/d/t")["group"] and other["name"] != swept["name"]


def test_logger_groups_build_from_their_target(make_cfg, tmp_path):
    cfg = make_cfg()
    assert build_logger(make_cfg(["logger=none"]).logger, tmp_path, cfg) is None
    csv = build_logger(make_cfg(["logger=csv"]).logger, tmp_path, cfg)
    assert type(csv).__name__ == "ContinuedCSVLogger"
    from hydra.utils import instantiate

    spec = instantiate(make_cfg(["logger=wandb", "logger.project=p", "logger.tags=[a,b]", "logger.log_model=true"]).logger)
    assert isinstance(spec, WandbLogging) and spec.project == "p" and list(spec.tags) == ["a", "b"] and spec.log_model
    assert isinstance(instantiate(make_cfg(["logger=csv"]).logger), CSVLogging)


def test_unknown_logger_option_is_named_by_validation(make_cfg):
    from hardneg.validate import problems

    found = problems(make_cfg(["logger=wandb", "+logger.projekt=x"]))
    assert any("logger.projekt" in p and "project" in p for p in found), found
    found = problems(make_cfg(["logger=wandb", "logger.mode=sometimes"]))
    assert any("logger.mode" in p for p in found), found


def test_run_summary_carries_the_collapse_verdict():
    result = {"status": "stopped", "final": {"recall@1": 0.25}, "skipped_steps": 2,
              "summary": {"collapse": {"collapsed": True, "detected_epoch": 3, "message": "all embeddings alike"}}}
    summary = run_summary(result, corrupt_images=5, stop_epoch=3)
    assert summary["collapsed"] is True and summary["collapse_detected_epoch"] == 3
    assert summary["collapse_message"] == "all embeddings alike"
    assert summary["corrupt_images"] == 5 and summary["stop_epoch"] == 3 and summary["final/recall@1"] == 0.25
    assert run_summary({"status": "completed", "final": {}}, 0, 1)["collapsed"] is False


def test_offline_wandb_run_is_named_tagged_and_summarised(make_cfg):
    result = train(make_cfg(["logger=wandb", "logger.mode=offline", "logger.tags=[mine]", "seed=1",
                             "callbacks.triplet_space=null", "callbacks.retrieval_examples=null"]))
    view = wandb_run_view(result["run_dir"])
    assert view["name"] == "sct-easy_hardest-s1"
    assert view["group"] == ""  # not a sweep, no experiment preset: ungrouped
    assert set(view["tags"]) == {"sct-easy_hardest", "sct", "easy_hardest", "glyphs", "seed1", "mine"}
    assert view["config"]["run"] == {"experiment": None, "method": "sct-easy_hardest", "loss": "sct",
                                     "mining": "easy_hardest", "data": "glyphs", "seed": 1}
    assert view["config"]["loss"]["_target_"] == "hardneg.losses.SCTLoss"  # the whole run config too
    summary = view["summary"]
    assert summary["status"] == "completed" and summary["stop_epoch"] == 1
    assert summary["collapsed"] is False and summary["corrupt_images"] == 0
    for key, value in result["final"].items():
        assert summary[f"final/{key}"] == pytest.approx(value)
    saved = json.loads(Path(result["run_dir"], "results.json").read_text())
    assert saved["corrupt_images"] == 0


def test_runs_of_one_cli_sweep_share_a_group_and_differ_in_name(tmp_path):
    """The group comes from Hydra's sweep directory, which only the real ``-m`` CLI has."""
    from tests.conftest import FAST_OVERRIDES

    overrides = [o for o in FAST_OVERRIDES if not o.startswith(("logger=", "trainer.limit_train_batches"))]
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="offline")
    sweep = tmp_path / "multirun" / "seeds_study"
    subprocess.run(
        [sys.executable, "-m", "hardneg.run", "-m", "seed=0,1", *overrides, "trainer.limit_train_batches=1",
         "logger=wandb", "logger.mode=offline", "eval.at_start=false", "callbacks.triplet_space=null",
         "callbacks.retrieval_examples=null", f"hydra.sweep.dir={sweep}", f"paths.cache_dir={tmp_path / 'cache'}"],
        check=True, capture_output=True, env=env, cwd=tmp_path, timeout=300,
    )
    views = [wandb_run_view(sweep / str(job)) for job in (0, 1)]
    assert [v["group"] for v in views] == ["seeds_study", "seeds_study"]
    assert [v["name"] for v in views] == ["sct-easy_hardest-s0", "sct-easy_hardest-s1"]


def test_corrupt_images_reach_results_and_the_wandb_summary(make_cfg, tmp_path):
    from tests.data.conftest import make_cub

    data = make_cub(tmp_path / "data")
    bad = [data / "images" / "005.Bird_5" / "Bird_5_0.jpg", data / "images" / "008.Bird_8" / "Bird_8_1.jpg"]
    for path in bad:  # test-split images (classes 5-8 are held out), read at every evaluation
        path.write_bytes(b"not an image at all")
    cfg = make_cfg(["data=cub", f"data.root={data}", "data.image_size=16", "data.batch_size=4",
                    "data.eval_batch_size=4", "data.num_workers=0", "data.recall_ks=[1,2,4]", "model=tiny", "trainer.max_epochs=1",
                    "trainer.limit_train_batches=1", "trainer.enable_progress_bar=false", "callbacks.progress_bar=null",
                    "callbacks.triplet_space=null", "callbacks.retrieval_examples=null",
                    "logger=wandb", "logger.mode=offline"], fast=False)
    with pytest.warns(UserWarning):  # the corrupt-image warnings, naming the files
        result = train(cfg)
    assert result["corrupt_images"] == 2
    assert json.loads(Path(result["run_dir"], "results.json").read_text())["corrupt_images"] == 2
    assert wandb_run_view(result["run_dir"])["summary"]["corrupt_images"] == 2
    from rich.console import Console

    from hardneg.report import print_results

    console = Console(record=True, width=200)
    print_results(result, cfg, console)
    assert "2 unreadable image(s) replaced by grey substitutes" in console.export_text()
