"""Step time of exact global mining vs per-rank (local) mining under DDP: 2 CPU processes (gloo).

    python experiments/bench/bench_ddp.py            # -> results/ddp.md
    python experiments/bench/bench_ddp.py --quick    # small smoke run, prints only

A step is what Lightning times between on_train_batch_start and on_train_batch_end of a real
``Trainer(strategy="ddp")`` fit of ``MetricLearningModule``: forward, (global: all-gather of
embeddings and labels, of the triplet counts and of the mined (S_ap, S_an)), mining, loss,
backward (global: the gathers' backward), DDP's gradient all-reduce and the SGD step. Data
loading is outside it. ``mining.scope=global`` is exactly one device on the global batch;
``local`` mines each rank's shard alone (what per-GPU miners do). The ratio global / local is
the price of exactness (goal <= 1.2x).

Workloads (global batch, 2 images per class, split by whole classes over the 2 ranks):
- head:      the project's CPU default: a Linear(1280, 64) head on cached backbone features.
             Nearly free to compute, so it shows the fixed cost of the collectives.
- tiny-cnn:  timm's test_efficientnet on 32 px images (model=tiny), fully trained.
- resnet18:  resnet18 on 64 px images, fully trained (not in --quick).
Both processes run in one spawn; every workload alternates local and global fits, round after
round, so a load change on the shared machine hits both alike. Medians over all timed steps;
1 torch thread per process (2 processes on 2 cores).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "ddp.md"
WORLD = 2
WORKLOADS = {  # name -> (backbone or None for cached features, input size, global batch)
    "head": (None, 1280, 64),
    "tiny-cnn": ("test_efficientnet", 32, 64),
    "resnet18": ("resnet18", 64, 32),
}


def fit(workload: str, scope: str, steps: int, rank: int) -> list[float]:
    """Per-step wall seconds of one DDP fit (this rank's view)."""
    import lightning as L
    import torch
    from torch.utils.data import DataLoader

    from hardneg.criterion import Criterion
    from hardneg.data.base import TensorRetrievalDataset
    from hardneg.data.samplers import ClassBalancedBatchSampler
    from hardneg.losses import SCTLoss
    from hardneg.mining import TripletMiner
    from hardneg.models import EmbeddingNet
    from hardneg.module import MetricLearningModule

    backbone, size, batch = WORKLOADS[workload]
    torch.manual_seed(0)
    classes = 200
    labels = torch.arange(classes).repeat_interleave(4)
    if backbone is None:  # head only: the backbone is built but never run (cached features)
        net = EmbeddingNet("tf_efficientnet_lite0", dim=64, pretrained=False, freeze_backbone=True)
        inputs = torch.randn(len(labels), size)
    else:
        net = EmbeddingNet(backbone, dim=64, pretrained=False)
        inputs = torch.randn(len(labels), 3, size, size)
    module = MetricLearningModule(
        net, Criterion(SCTLoss(), TripletMiner("easy", "hardest", scope=scope)),
        optimizer=lambda params: torch.optim.SGD(params, lr=1e-3), inputs_are_features=backbone is None,
    )
    sampler = ClassBalancedBatchSampler(labels, batch, 2, num_replicas=WORLD, rank=rank)
    timer = _timer()
    trainer = L.Trainer(
        accelerator="cpu", devices=WORLD, strategy="ddp", max_steps=steps, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        use_distributed_sampler=False, callbacks=[timer], num_sanity_val_steps=0,
    )
    trainer.fit(module, DataLoader(TensorRetrievalDataset(inputs, labels), batch_sampler=sampler))
    return timer.times


def _timer():
    from lightning.pytorch.callbacks import Callback

    class StepTimer(Callback):
        def __init__(self):
            self.times, self.start = [], 0.0

        def on_train_batch_start(self, *args):
            self.start = time.perf_counter()

        def on_train_batch_end(self, *args):
            self.times.append(time.perf_counter() - self.start)

    return StepTimer()


def worker(rank: int, port: int, workloads: list[str], steps: int, warmup: int, rounds: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD), RANK=str(rank),
                      LOCAL_RANK=str(rank), NODE_RANK="0")
    import logging
    import warnings

    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    times = {w: {"local": [], "global": []} for w in workloads}
    for r in range(rounds):
        for w in workloads:
            for scope in ("local", "global") if r % 2 == 0 else ("global", "local"):
                times[w][scope] += fit(w, scope, warmup + steps, rank)[warmup:]
    if rank == 0:
        Path(out).write_text(json.dumps(times))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run; print, do not write results")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per fit")
    parser.add_argument("--rounds", type=int, default=None, help="local/global fits per workload")
    args = parser.parse_args()
    workloads = ["head", "tiny-cnn"] if args.quick else list(WORKLOADS)
    steps = args.steps or (10 if args.quick else 40)
    rounds = args.rounds or (1 if args.quick else 3)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

    import torch
    import torch.multiprocessing as mp

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "times.json"
        mp.start_processes(worker, args=(free_port(), workloads, steps, 3, rounds, str(out)), nprocs=WORLD,
                           start_method="spawn")
        times = json.loads(out.read_text())
    load_after = os.getloadavg()[0]

    rows = []
    for w in workloads:
        local, glob = (1000 * statistics.median(times[w][s]) for s in ("local", "global"))
        rows.append(f"| {w} | {WORKLOADS[w][2]} | {local:.1f} | {glob:.1f} | **{glob / local:.2f}x** | {len(times[w]['global'])} |")
    table = "\n".join([
        "| workload | global batch | local ms/step | global ms/step | global / local | timed steps each |",
        "|---|---|---|---|---|---|", *rows,
    ])
    command = "python experiments/bench/bench_ddp.py" + (" --quick" if args.quick else "")
    report = (
        "# DDP: exact global mining vs per-rank mining (2 CPU processes, gloo)\n\n"
        f"Command: `{command}`. Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"1 torch thread per process. Load average before / after: {load_before:.1f} / {load_after:.1f} "
        "(other jobs on the machine slow both scopes alike: they alternate round by round).\n\n"
        "Median wall time per training step of a real `Trainer(strategy=\"ddp\")` fit (forward, gathers, mining, "
        "SCT loss, backward, gradient all-reduce, SGD step; data loading excluded). Goal: global / local <= 1.2x.\n\n"
        f"{table}\n"
    )
    print(report)
    if not args.quick:
        RESULTS.write_text(report)
        print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
