"""XBM under DDP: every rank enqueues the global batch, so the banks are identical and a
2-process run (gloo) takes exactly the one-device steps, bank included.

Three steps on global batches A, B, A: step 1 fills the bank, step 2 mines against A's
embeddings, step 3 against A's and B's (A's own images then are ignored as positives).
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
from hardneg.losses import MultiSimilarityLoss, NCALoss, SCTLoss
from hardneg.memory import CrossBatchMemory
from hardneg.mining import TripletMiner
from hardneg.models import EmbeddingNet
from hardneg.module import MetricLearningModule
from tests.ddp_helpers import run_ranks

WORLD, CLASSES, K, DIM = 2, 8, 2, 8
PER_RANK = CLASSES * K // WORLD

# name -> (loss, mining.neg, mining.scope, memory.use)
SCENARIOS = {
    "sct": (lambda: SCTLoss(), "hardest", "global", "both"),
    "nca_semihard_negatives": (lambda: NCALoss(), "semihard", "global", "negatives"),
    "multi_similarity": (lambda: MultiSimilarityLoss(), "hardest", "global", "both"),
    "sct_local": (lambda: SCTLoss(), "hardest", "local", "both"),
}


def data() -> tuple[torch.Tensor, torch.Tensor]:
    """Two global batches of 16 images (8 classes x 2), one after the other."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2 * CLASSES * K, 3, 32, 32, generator=g, dtype=torch.float64)
    return x, torch.arange(CLASSES).repeat_interleave(K).repeat(2)


def shards(rank: int | None) -> list[list[int]]:
    """Batches A, B, A: this rank's part (rank None: the whole global batch)."""
    size = CLASSES * K
    part = range(size) if rank is None else range(rank * PER_RANK, (rank + 1) * PER_RANK)
    return [list(part), [i + size for i in part], list(part)]


def run_steps(name: str, rank: int | None, devices: int) -> dict:
    loss, neg, scope, use = SCENARIOS[name]
    torch.manual_seed(0)
    net = EmbeddingNet("test_efficientnet_gn", dim=DIM, pretrained=False)  # per-sample norm (see test_ddp.py)
    module = MetricLearningModule(
        net, Criterion(loss(), TripletMiner("easy", neg, scope=scope)),
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
        memory=CrossBatchMemory(size=40, dim=DIM, use=use),
    )
    record = {"loss": [], "grads": [], "bank": [], "stats": []}
    trainer = L.Trainer(
        accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", precision="64-true",
        max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, use_distributed_sampler=False, callbacks=[Recorder(record)],
    )
    x, y = data()
    trainer.fit(module, DataLoader(TensorRetrievalDataset(x, y), batch_sampler=shards(rank)))
    return record


class Recorder(Callback):
    def __init__(self, record: dict):
        self.record = record

    def on_before_optimizer_step(self, trainer, module, optimizer):
        self.record["grads"].append({n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None})

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.record["loss"].append(float(outputs["loss"]))
        self.record["bank"].append([t.clone() for t in module.memory.bank.get()])
        stats = module.last_train_stats
        self.record["stats"].append({k: float(v) for k, v in stats.items() if v.dim() == 0})


def _worker(rank: int, port: int, out_dir: str) -> None:
    for key in [k for k in os.environ if k.startswith(("SLURM_", "TORCHELASTIC_"))]:
        del os.environ[key]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD),
                      RANK=str(rank), LOCAL_RANK=str(rank), NODE_RANK="0")
    torch.set_num_threads(1)
    results = {name: run_steps(name, rank, WORLD) for name in SCENARIOS}
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    return run_ranks(_worker, tmp_path_factory.mktemp("xbm_ddp"), WORLD)


@pytest.mark.ddp
@pytest.mark.parametrize("name", [n for n, spec in SCENARIOS.items() if spec[2] == "global"])
def test_global_mining_with_memory_equals_one_device(ddp_results, name):
    one = run_steps(name, None, devices=1)
    assert one["stats"][1]["bank_size"] == 16 and one["stats"][2]["bank_size"] == 32
    assert "hn_ratio_bank" in one["stats"][2]  # the bank was really mined from
    for rank in ddp_results:
        got = rank[name]
        for step in range(3):
            assert got["loss"][step] == pytest.approx(one["loss"][step], abs=1e-6), step
            for key in one["grads"][step]:
                torch.testing.assert_close(got["grads"][step][key], one["grads"][step][key], atol=1e-6, rtol=0)
            for mine, single in zip(got["bank"][step], one["bank"][step]):  # identical banks, rank order
                torch.testing.assert_close(mine, single, atol=1e-9, rtol=0)
            for key, value in one["stats"][step].items():
                assert got["stats"][step][key] == pytest.approx(value, abs=1e-6), (step, key)


@pytest.mark.ddp
def test_local_scope_still_shares_one_global_bank(ddp_results):
    for step in range(3):
        for a, b in zip(ddp_results[0]["sct_local"]["bank"][step], ddp_results[1]["sct_local"]["bank"][step]):
            assert torch.equal(a, b)
    assert ddp_results[0]["sct_local"]["bank"][0][2].tolist() == list(range(16))  # both ranks' samples
