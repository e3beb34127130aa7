"""DDP: mining over the global batch is exactly one device on the concatenated batch.

Two CPU processes (gloo) run real ``Trainer(strategy="ddp")`` steps of ``MetricLearningModule``.
They are started once, with ``torch.multiprocessing`` (a module-level worker, as spawn needs),
and each runs every scenario in turn: a process pays ~10 s of imports, a Lightning
``ddp_spawn`` fit would pay it again per scenario, and ``ddp`` would re-launch pytest itself.
With ``LOCAL_RANK``/``RANK`` set, Lightning's ``ddp`` joins the processes it finds instead.
"""
from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader

from hardneg.criterion import Criterion
from hardneg.data.base import TensorRetrievalDataset
from hardneg.losses import MultiSimilarityLoss, NCALoss, ProxyAnchorLoss, SCTLoss
from hardneg.mining import TripletMiner
from hardneg.models import EmbeddingNet
from hardneg.module import MetricLearningModule
from tests.ddp_helpers import run_ranks

WORLD, CLASSES, K, DIM = 2, 8, 2, 8

# name -> (loss, mining.neg, mining.scope). Semi-hard mining leaves some anchors without a
# triplet, so the ranks' triplet counts differ and a wrong normalisation would show.
SCENARIOS = {
    "sct": (lambda: SCTLoss(), "hardest", "global"),
    "sct_semihard": (lambda: SCTLoss(), "semihard", "global"),
    "sct_separate": (lambda: SCTLoss(hard_rule="paper", reduction="separate"), "semihard", "global"),
    "nca_semihard": (lambda: NCALoss(), "semihard", "global"),
    "multi_similarity": (lambda: MultiSimilarityLoss(), "hardest", "global"),
    "proxy_anchor": (lambda: ProxyAnchorLoss(num_classes=CLASSES, dim=DIM, lr_multiplier=1.0), "hardest", "global"),
    "sct_local": (lambda: SCTLoss(), "hardest", "local"),
    # Rank 1's first batch holds a NaN image: local, only rank 1's loss is NaN; global, every rank's.
    "nonfinite_local": (lambda: SCTLoss(), "hardest", "local"),
    "nonfinite_global": (lambda: SCTLoss(), "hardest", "global"),
}
NONFINITE = ("nonfinite_local", "nonfinite_global")


def global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """16 images of 8 classes, K=2 each; rank r holds classes 4r..4r+3 (whole groups)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(CLASSES * K, 3, 32, 32, generator=g, dtype=torch.float64)
    return x, torch.arange(CLASSES).repeat_interleave(K)


def make_module(name: str) -> MetricLearningModule:
    loss, neg, scope = SCENARIOS[name]
    torch.manual_seed(0)
    # GroupNorm, not BatchNorm: per-rank batch statistics differ from the whole batch's (plain BN
    # under DDP is not one device; SyncBN is, but needs a GPU), so the net must be per-sample.
    net = EmbeddingNet("test_efficientnet_gn", dim=DIM, pretrained=False)
    momentum = dict(momentum=0.9, weight_decay=0.1) if name in NONFINITE else {}
    return MetricLearningModule(
        net, Criterion(loss(), TripletMiner("easy", neg, scope=scope)),
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1, **momentum),
    )


def run_steps(name: str, shard: list[int], devices: int) -> dict:
    """Fit on ``shard`` of the global batch; record per step the loss, every gradient (after
    DDP's all-reduce) and the weights after the step, and the weights before training."""
    x, y = global_batch()
    batches = [shard]
    if name in NONFINITE:  # a NaN image in rank 1's first batch, then a clean second batch
        poisoned = x.clone()
        poisoned[len(x) // WORLD + 1] = float("nan")
        x, y = torch.cat([poisoned, x]), torch.cat([y, y])
        batches.append([i + len(poisoned) for i in shard])
    module = make_module(name)
    record = {"loss": [], "grads": [], "weights": []}
    recorder = Recorder(record)
    trainer = L.Trainer(
        accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", precision="64-true",
        max_steps=len(batches), logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, use_distributed_sampler=False, callbacks=[recorder],
    )
    trainer.fit(module, DataLoader(TensorRetrievalDataset(x, y), batch_sampler=batches))
    record["skipped_steps"] = module.skipped_steps
    record["initial"] = recorder.initial
    return record


class Recorder(Callback):
    def __init__(self, record: dict):
        self.record, self.initial = record, None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if self.initial is None:
            self.initial = {n: p.detach().clone() for n, p in module.named_parameters()}

    def on_before_optimizer_step(self, trainer, module, optimizer):  # runs before the module's own hook
        self.record["grads"].append({n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None})

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.record["loss"].append(float(outputs["loss"]))
        self.record["weights"].append({n: p.detach().clone() for n, p in module.named_parameters()})


EVAL_ITEMS = 13  # odd: DistributedSampler pads rank 1's shard with a repeat of item 0


class EvaluationRecorder(Callback):
    """Keeps what the module hands every callback after an evaluation."""

    def __init__(self):
        self.seen = []

    def on_evaluation(self, trainer, module, evaluation):
        ranking = {f"ranking_{name}": getattr(evaluation.ranking, name)
                   for name in ("similarities", "indices", "first_positive", "best_positive", "best_negative")}
        self.seen.append({**evaluation.state(), **ranking, "points": evaluation.triplet_points()})


def run_evaluation(run_dir: str, devices: int) -> dict:
    """One ``trainer.validate`` of 13 test items in float64, with the analysis callbacks writing
    their files under ``run_dir``; returns what each callback and the module saw."""
    from hardneg.callbacks import CollapseDetector, TripletSpaceCallback

    x, y = global_batch()
    x, y = x[:EVAL_ITEMS], y[:EVAL_ITEMS]
    module = make_module("sct")
    recorder, detector = EvaluationRecorder(), CollapseDetector(threshold=-0.99, patience=1)
    trainer = L.Trainer(
        accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", precision="64-true",
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[recorder, detector, TripletSpaceCallback(gradient_field=False, keep_embeddings="all")],
        default_root_dir=run_dir,
    )
    trainer.validate(module, DataLoader(TensorRetrievalDataset(x, y), batch_size=4), verbose=False)
    return {"seen": recorder.seen, "history": module.eval_history, "collapse": detector.history}


def _worker(rank: int, port: int, out_dir: str) -> None:
    """One DDP process: join the group, run every scenario, save what it saw."""
    for key in [k for k in os.environ if k.startswith(("SLURM_", "TORCHELASTIC_"))]:
        del os.environ[key]  # else Lightning would take this for a cluster job
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD),
                      RANK=str(rank), LOCAL_RANK=str(rank), NODE_RANK="0")
    torch.set_num_threads(1)
    per_rank = CLASSES * K // WORLD
    shard = list(range(rank * per_rank, (rank + 1) * per_rank))
    results = {name: run_steps(name, shard, WORLD) for name in SCENARIOS}
    results["collectives"] = uneven_gather(rank)
    results["evaluation"] = run_evaluation(str(Path(out_dir) / "evaluation"), WORLD)
    results["evaluation_dir"] = str(Path(out_dir) / "evaluation")
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")


def uneven_gather(rank: int) -> dict:
    """gather_rows with 0 rows on rank 0 and 3 on rank 1, then with none anywhere; and the
    backward's reduce-scatter branch (NCCL's; gloo has it too) against its all-reduce one."""
    from hardneg import distributed

    x = torch.arange(3 * rank * 2, dtype=torch.float64).view(3 * rank, 2).requires_grad_()
    pooled = distributed.gather_rows(x)
    (pooled * torch.arange(1.0, 7.0, dtype=torch.float64).view(3, 2)).sum().backward()
    empty = distributed.gather_rows(torch.zeros(0, 2))
    grads = []
    for backend in ("gloo", "nccl"):
        y = torch.full((2, 3), float(rank + 1), requires_grad=True)
        get_backend, distributed.dist.get_backend = distributed.dist.get_backend, lambda *a, b=backend: b
        try:
            (distributed.all_gather(y) * torch.arange(12.0).view(2, 2, 3)).sum().backward()
        finally:
            distributed.dist.get_backend = get_backend
        grads.append(y.grad)
    return {"pooled": pooled.detach(), "grad": x.grad, "empty": tuple(empty.shape), "branches": grads}


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    return run_ranks(_worker, tmp_path_factory.mktemp("ddp"), WORLD)


def assert_close(a: dict, b: dict, atol=1e-6):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0, msg=lambda m, k=key: f"{k}: {m}")


@pytest.mark.ddp
@pytest.mark.parametrize("name", [n for n, (_, _, scope) in SCENARIOS.items() if n not in NONFINITE and scope == "global"])
def test_global_mining_equals_one_device_on_the_whole_batch(ddp_results, name):
    one = run_steps(name, list(range(CLASSES * K)), devices=1)
    for rank in ddp_results:
        assert rank[name]["loss"][0] == pytest.approx(one["loss"][0], abs=1e-6)
        assert_close(rank[name]["grads"][0], one["grads"][0])  # every parameter, after DDP's average
        assert_close(rank[name]["weights"][0], one["weights"][0])


def test_ranks_mine_different_numbers_of_triplets():
    """Why the normalisation matters: with semi-hard negatives the shards' counts differ, so
    averaging per-rank means would weight triplets unequally."""
    module = make_module("sct_semihard")
    x, y = global_batch()
    with torch.no_grad():
        e = module.net.double()(x)
    half = CLASSES * K // WORLD
    counts = [len(module.criterion.miner(e[r * half:(r + 1) * half] @ e.T, y[r * half:(r + 1) * half], y,
                                         torch.arange(half) + r * half)) for r in range(WORLD)]
    assert counts[0] != counts[1], counts


@pytest.mark.ddp
def test_local_mining_differs_from_one_device(ddp_results):
    one = run_steps("sct", list(range(CLASSES * K)), devices=1)
    local = ddp_results[0]["sct_local"]
    assert abs(local["loss"][0] - one["loss"][0]) > 1e-3  # easier, per-shard negatives
    diff = max((local["grads"][0][k] - one["grads"][0][k]).abs().max() for k in one["grads"][0])
    assert diff > 1e-4
    # The ranks also disagree with each other (each mined its own shard); DDP averaged the gradients.
    assert ddp_results[0]["sct_local"]["loss"][0] != ddp_results[1]["sct_local"]["loss"][0]
    assert_close(ddp_results[0]["sct_local"]["grads"][0], ddp_results[1]["sct_local"]["grads"][0])


@pytest.mark.ddp
def test_uneven_rows_are_pooled_in_rank_order_and_gradients_sum_over_ranks(ddp_results):
    for rank in ddp_results:
        got = rank["collectives"]
        assert got["pooled"].tolist() == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]] and got["empty"] == (0, 2)
    # Both ranks computed the same loss from rank 1's rows: its rows get the sum, 2x the weights.
    assert ddp_results[1]["collectives"]["grad"].tolist() == [[2.0, 4.0], [6.0, 8.0], [10.0, 12.0]]
    assert ddp_results[0]["collectives"]["grad"].shape == (0, 2)
    for rank, results in enumerate(ddp_results):  # each rank's slice of the weights, summed over 2 ranks
        gloo, nccl = results["collectives"]["branches"]
        assert gloo.tolist() == nccl.tolist() == (2 * torch.arange(12.0).view(2, 2, 3)[rank]).tolist()


def test_a_nonfinite_step_is_skipped_on_one_device_too():
    run = run_steps("nonfinite_local", list(range(CLASSES * K)), devices=1)
    assert run["skipped_steps"] == 1
    assert_close(run["weights"][0], run["initial"], atol=0)
    assert any(float((run["weights"][1][k] - run["initial"][k]).abs().max()) > 0 for k in run["initial"])


@pytest.mark.ddp
@pytest.mark.parametrize("name", NONFINITE)
def test_a_nonfinite_step_is_skipped_by_every_rank_without_hanging(ddp_results, name):
    for rank in ddp_results:
        run = rank[name]
        assert run["skipped_steps"] == 1
        # Weight decay and momentum would move the weights on zero gradients: the step is dropped.
        assert_close(run["weights"][0], run["initial"], atol=0)
        assert run["grads"][0] and all(float(g.abs().max()) == 0 for g in run["grads"][0].values())
        assert any(float((run["weights"][1][k] - run["initial"][k]).abs().max()) > 0 for k in run["initial"])
    assert_close(ddp_results[0][name]["weights"][1], ddp_results[1][name]["weights"][1], atol=0)


@pytest.mark.ddp
def test_evaluation_is_the_whole_test_set_on_every_rank_and_equals_one_process(ddp_results, tmp_path):
    """The gathered evaluation (padding duplicate dropped, dataset order) equals one process:
    what callbacks receive, the logged metrics, the collapse statistics and the saved files."""
    import math

    from hardneg.analysis import artifacts

    one = run_evaluation(str(tmp_path / "one"), devices=1)
    (want,) = one["seen"]
    assert len(want["labels"]) == EVAL_ITEMS and torch.equal(want["indices"], torch.arange(EVAL_ITEMS))
    for rank in ddp_results:
        (got,) = rank["evaluation"]["seen"]
        assert torch.equal(got["indices"], want["indices"]) and torch.equal(got["labels"], want["labels"])
        torch.testing.assert_close(got["embeddings"], want["embeddings"], atol=1e-12, rtol=0)
        for key in ("ranking_indices", "ranking_first_positive"):  # the ranking, tie order included
            assert torch.equal(got[key], want[key]), key
        for key in ("ranking_similarities", "ranking_best_positive", "ranking_best_negative"):
            torch.testing.assert_close(got[key], want[key], atol=1e-12, rtol=0)
        assert torch.equal(got["points"][1], want["points"][1])
        for (e1, m1), (e2, m2) in zip(rank["evaluation"]["history"], one["history"]):
            assert e1 == e2 and m1.keys() == m2.keys()
            assert all(m1[k] == pytest.approx(m2[k], abs=1e-12) or math.isnan(m2[k]) for k in m2)
        assert rank["evaluation"]["collapse"].keys() == {0}
        for key, value in one["collapse"][0].items():  # the stop decision reads these, on every rank
            assert rank["evaluation"]["collapse"][0][key] == pytest.approx(value, abs=1e-12), key
    # The files rank 0 wrote (figure data, embeddings) equal the one-process run's.
    two_dir = Path(ddp_results[0]["evaluation_dir"])
    for load in (artifacts.load_test_evals, artifacts.load_embeddings):
        (saved_two,), (saved_one,) = load(two_dir), load(tmp_path / "one")
        assert saved_two.keys() == saved_one.keys()
        for key, value in saved_one.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(saved_two[key], value), key
            elif isinstance(value, dict):
                assert all(saved_two[key][k] == pytest.approx(v, abs=1e-12) for k, v in value.items()), key
            else:
                assert saved_two[key] == value, key


# The end-to-end run: the real CLI with trainer=ddp, as a user starts it (Lightning re-launches
# `python -m hardneg.run ...` for rank 1), against train(cfg) in one process. The default model
# trains only its head on cached backbone features, which is per-sample, so DDP training is
# one-device training and the metrics must agree too, not only their keys.
E2E = [
    "data.max_classes=12", "data.image_size=32", "data.batch_size=12", "data.images_per_font=1",
    "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1", "trainer.enable_progress_bar=false",
    "logger=none", "callbacks.progress_bar=null",
]


@pytest.mark.slow
@pytest.mark.ddp
@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
def test_two_process_cli_run_reports_what_one_process_does(make_cfg, tmp_path, strategy):
    """ddp re-launches the command; ddp_spawn (notebooks) spawns workers whose evaluations, run
    summary and callback state must come back to the launching process for results.json."""
    import json
    import subprocess
    import sys

    from hardneg.run import train

    cache = f"paths.cache_dir={tmp_path / 'cache'}"
    one = train(make_cfg([*E2E, cache], fast=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "LOCAL_RANK", "RANK", "WORLD_SIZE"))}
    env.update(HF_HUB_OFFLINE="1", WANDB_MODE="offline")
    out = subprocess.run(
        [sys.executable, "-m", "hardneg.run", "trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu",
         f"trainer.strategy={strategy}", *E2E,
         cache, f"paths.output_dir={tmp_path / 'ddp'}", f"hydra.run.dir={tmp_path / 'hydra'}"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    two = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert [e for e, _ in two["history"]] == [e for e, _ in one["history"]] == [0, 1, 2]
    for (_, metrics_two), (_, metrics_one) in zip(two["history"], one["history"]):
        assert metrics_two.keys() == metrics_one.keys()
        for key in metrics_one:  # evaluation gathers every rank's shard, no sample counted twice
            assert metrics_two[key] == pytest.approx(metrics_one[key], abs=1e-4), key
    assert two["train"].keys() == one["train"].keys()
    for key in one["train"]:  # the last step's stats are the pooled, one-device ones
        assert two["train"][key] == pytest.approx(one["train"][key], abs=1e-4), key
    assert two["summary"]["collapse"]["mean_similarity"].keys() == one["summary"]["collapse"]["mean_similarity"].keys()
    if strategy == "ddp":
        assert (tmp_path / "hydra" / "train_ddp_process_1.log").exists()  # rank 1 was a process of its own
