"""Lightning's overhead per training step: a plain PyTorch loop vs hardneg's module in the Trainer.

    python experiments/bench/bench_lightning.py            # -> results/lightning.md
    python experiments/bench/bench_lightning.py --quick    # smoke run, prints only

Both sides train the same tiny network (timm's ``test_efficientnet`` + 64-d head, random init)
with the same criterion (SCT, easy/hardest mining), optimiser (SGD), data (random images in a
``TensorDataset``, 2 images per class, ``num_workers=0``) and number of steps, from the same
initial weights. The plain loop is forward, criterion, backward, ``optimizer.step()``,
``zero_grad``; the Lightning side is ``MetricLearningModule`` under ``lightning.Trainer`` (no
logger, checkpointing, progress bar or validation: what remains is the Trainer's loop, the
module's ``training_step`` with its ``self.log`` calls and the optimiser hooks).
Timed: the steps after ``--warmup`` steps, from the start of the first timed batch to the end of
the last (CPU time of the process; Trainer: from ``on_train_batch_start`` to ``on_train_batch_end``, so the Trainer's
one-off setup and teardown are not counted: they are reported apart). The two run interleaved
(A B A B ...) in one process with pinned torch threads; reported: the median per-step time,
its spread (min-max of the repeats) and the ratio of medians.
"""
from __future__ import annotations

import argparse
import copy
import functools
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
RESULTS = Path(__file__).resolve().parent / "results" / "lightning.md"
# CPU time of the process (user + system): time spent waiting for a core that other jobs hold does
# not count, which keeps the comparison clean on a shared machine. (No worker processes here.)
_clock = time.process_time


def make_parts(batch: int, image: int, steps: int, seed: int = 0):
    from hardneg.criterion import Criterion
    from hardneg.losses import SCTLoss
    from hardneg.mining import TripletMiner
    from hardneg.models import EmbeddingNet

    torch.manual_seed(seed)
    net = EmbeddingNet("test_efficientnet", dim=64, pretrained=False)
    n = batch * steps
    x = torch.randn(n, 3, image, image)
    labels = torch.arange(n) // 2
    data = torch.utils.data.TensorDataset(x, labels, torch.arange(n))
    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=False, num_workers=0)
    return net, Criterion(SCTLoss(), TripletMiner("easy", "hardest")), loader


def plain_loop(net, criterion, loader, warmup: int) -> float:
    """Seconds per step after ``warmup`` steps."""
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    net.train()
    start = None
    for i, (x, labels, _) in enumerate(loader):
        if i == warmup:
            start = _clock()
        loss, _ = criterion(net(x), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return (_clock() - start) / (len(loader) - warmup)


def lightning_loop(net, criterion, loader, warmup: int) -> tuple[float, float]:
    """(seconds per step after ``warmup`` steps, seconds of the whole ``fit``)."""
    import lightning as L

    from hardneg.module import MetricLearningModule

    class StepClock(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == warmup:
                self.start = _clock()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.end = _clock()

    clock = StepClock()
    module = MetricLearningModule(net, criterion, optimizer=functools.partial(torch.optim.SGD, lr=0.01))
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
        log_every_n_steps=10,  # as conf/trainer/default.yaml
        callbacks=[clock],
    )
    begin = _clock()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, train_dataloaders=loader)
    total = _clock() - begin
    return (clock.end - clock.start) / (len(loader) - warmup), total


def measure(batch: int, image: int, steps: int, warmup: int, repeats: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    net, criterion, loader = make_parts(batch, image, steps + warmup)
    times = {"plain": [], "lightning": []}
    fit_total = []
    # One untimed round first: the first fit in a process pays one-off costs (lazy imports,
    # hook discovery) that spilled into its timed steps (measured +300 % on one repeat).
    plain_loop(copy.deepcopy(net), criterion, loader, warmup)
    lightning_loop(copy.deepcopy(net), criterion, loader, warmup)
    for _ in range(repeats):  # interleaved: a load that changes over the run slows both alike
        times["plain"].append(plain_loop(copy.deepcopy(net), criterion, loader, warmup))
        per_step, total = lightning_loop(copy.deepcopy(net), criterion, loader, warmup)
        times["lightning"].append(per_step)
        fit_total.append(total)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "batch": batch, "image": image, "steps": steps, "repeats": repeats, "threads": torch.get_num_threads(),
        "median_ms": {k: 1000 * v for k, v in med.items()},
        "spread_ms": {k: (1000 * min(v), 1000 * max(v)) for k, v in times.items()},
        "overhead": med["lightning"] / med["plain"] - 1,
        # the spread of the ratio over the paired repeats
        "pair_overheads": sorted(b / a - 1 for a, b in zip(times["plain"], times["lightning"])),
        "fit_setup_s": statistics.median(fit_total) - med["lightning"] * steps,
    }


def report(r: dict) -> str:
    p, lt = r["median_ms"]["plain"], r["median_ms"]["lightning"]
    sp, sl = r["spread_ms"]["plain"], r["spread_ms"]["lightning"]
    pairs = r["pair_overheads"]
    return (
        f"| {r['batch']} x 3 x {r['image']}^2 | {r['steps']} | {r['repeats']} | {p:.2f} ({sp[0]:.2f}-{sp[1]:.2f}) "
        f"| {lt:.2f} ({sl[0]:.2f}-{sl[1]:.2f}) | **{100 * r['overhead']:+.1f} %** "
        f"| {100 * pairs[0]:+.1f} % .. {100 * pairs[-1]:+.1f} % | {r['fit_setup_s']:.2f} |"
    )


def summary(rows) -> str:
    return "Lightning overhead per step vs a plain loop (goal <= 3 %): " + ", ".join(
        f"{100 * r['overhead']:+.1f} % (batch {r['batch']} x {r['image']}px, "
        f"{r['median_ms']['lightning'] - r['median_ms']['plain']:+.2f} ms of {r['median_ms']['plain']:.1f} ms)"
        for r in rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: few steps, no results file")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    if args.quick:
        r = measure(batch=16, image=32, steps=10, warmup=2, repeats=2, threads=args.threads)
        print(report(r))
        print("summary:", summary([r]))
        return
    rows = []
    for batch, image in ((32, 64), (128, 32)):
        r = measure(batch=batch, image=image, steps=30, warmup=3, repeats=args.repeats, threads=args.threads)
        print(report(r), flush=True)
        rows.append(r)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        "# Lightning overhead per training step (CPU)\n\n"
        f"Command: `python experiments/bench/bench_lightning.py --threads {args.threads} --repeats {args.repeats}`. "
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{rows[0]['threads']} torch thread(s).\n\n"
        "Same tiny network, criterion, optimiser, data and steps in a plain PyTorch loop and through "
        "`lightning.Trainer` with hardneg's `MetricLearningModule`, run interleaved (see the script's "
        "docstring). Per-step CPU time of the process (`time.process_time`; the machine is shared), median over the repeats (min-max in brackets); overhead = "
        "Lightning / plain - 1 (goal: <= 3 %), with the range of the paired repeats' overheads. Fit setup: "
        "the rest of `trainer.fit` (one-off, not per step).\n\n"
        "| batch | timed steps | repeats | plain ms/step | Lightning ms/step | overhead | paired range | fit setup s |\n"
        "|---|---|---|---|---|---|---|---|\n"
        + "\n".join(report(r) for r in rows) + "\n"
    )
    print("summary:", summary(rows))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
