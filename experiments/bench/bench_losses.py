"""Loss + mining, forward + backward, on CPU: hardneg vs the official code vs pytorch-metric-learning.

    python experiments/bench/bench_losses.py            # B=128 (D=64), 512, 2048 (D=512) -> results/losses.md
    python experiments/bench/bench_losses.py --quick    # small smoke run, prints only

Every variant starts from the same raw features x [B, D] (requires_grad; 2 images per class,
as the paper's batches), L2-normalises them, mines, computes the loss and back-propagates to x.
- ours:     hardneg.criterion.Criterion(loss, TripletMiner(...)) on F.normalize(x).
- official: the official repository's SCTLoss.forward (littleredxh/HardNegative, _code/Loss.py)
            re-typed op for op: repeat-built label masks, two detached clones of the
            similarity matrix, masked assignments, dense indexing; only the print is dropped.
- pml:      pytorch-metric-learning BatchEasyHardMiner(pos_strategy=EASY, neg_strategy=HARD)
            followed by (sct) a custom SCT written on PML's BaseMetricLossFunction the way PML's
            own losses are written (the loss recomputes the matrix with its distance and indexes
            it), or (margin) PML's own TripletMarginLoss(margin=0.2) with its default Euclidean
            distance on normalised embeddings, against ours with the same loss and reduction.
Measurements run in fresh subprocesses, after two warm-up steps at full size.
Time: the variants of a task run interleaved in one process (a load that changes over the run
slows them alike): step by step at B >= 512, in blocks of (512 / B)^2 steps below, without the
first step of each block (after a switch a step pays for caches the other variant filled). Reported: CPU time of the process per step (time.process_time:
user + system, so page faults count, and time spent waiting for a core that other jobs hold does
not), median of --repeats steps, with --threads torch threads (default 1, which keeps CPU time a
clean measure on a shared machine); the median wall time beside it.
Memory: one process per variant; the growth of the peak resident set (VmHWM, reset through
/proc/self/clear_refs) over one step, in a run where glibc serves every allocation >= 64 KiB with
mmap (MALLOC_MMAP_THRESHOLD_), so freed tensors leave the resident set at once and the peak tracks
live memory: every temporary and autograd buffer of the step, inputs excluded.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from loss_variants import TASKS, build  # beside this script

RESULTS = Path(__file__).resolve().parent / "results" / "losses.md"


# ----------------------------------------------------------------------------- measuring
def _status_kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident set
        return True
    except OSError:
        return False


def child(mode, task, variants, batch, dim, repeats, threads):
    """Measurements in this fresh process. ``memory``: one step's peak of the one variant.
    ``time``: all of the task's variants, interleaved step by step, so that a machine whose
    load changes over the run slows them alike."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    steps = {v: build(task, v) for v in variants.split(",")}
    labels = torch.arange(batch) // 2  # 2 images per class, like the paper's batches
    x = torch.randn(batch, dim, requires_grad=True)
    for _ in range(2):  # first-call costs at full size: thread pools, BLAS packing buffers, kernels
        for step in steps.values():
            step(x, labels).backward()
            x.grad = None
    if mode == "memory":
        (step,) = steps.values()
        if not _reset_peak_rss():
            return {"peak_mib": float("nan")}
        before = _status_kib("VmRSS")
        step(x, labels).backward()
        return {"peak_mib": (_status_kib("VmHWM") - before) / 1024}
    cpu = {v: [] for v in steps}
    wall = {v: [] for v in steps}
    # Blocks of consecutive steps per variant, the blocks interleaved (A..A B..B A..A ...): the
    # first step after switching variants pays for caches the other variant filled (measured
    # +15-25 % at 128 x 64, landing on whichever variant comes second), so it is not counted.
    block = max(1, (512 // batch) ** 2)
    rounds = max(1, repeats // block)
    for _ in range(rounds):
        for v, step in steps.items():
            for i in range(block + (block > 1)):
                c0, w0 = time.process_time(), time.perf_counter()
                step(x, labels).backward()
                c1, w1 = time.process_time(), time.perf_counter()
                x.grad = None
                if i or block == 1:
                    cpu[v].append(c1 - c0)
                    wall[v].append(w1 - w0)
    return {
        v: {
            "cpu_ms": 1000 * statistics.median(cpu[v]),
            "cpu_min_ms": 1000 * min(cpu[v]),
            "wall_ms": 1000 * statistics.median(wall[v]),
            "threads": torch.get_num_threads(),
            "cpu_steps_ms": [1000 * c for c in cpu[v]],
        }
        for v in steps
    }


def check_equivalence():
    """All variants of a task give the same loss on one input (float32, close)."""
    import torch

    torch.manual_seed(1)
    x, labels = torch.randn(64, 32), torch.arange(64) // 2
    for task, variants in TASKS.items():
        if "ours" not in variants:
            continue
        values = {v: build(task, v)(x.clone().requires_grad_(), labels).item() for v in variants}
        ref = values["ours"]
        assert all(abs(v - ref) <= 1e-5 * max(1.0, abs(ref)) for v in values.values()), (task, values)


def _child(mode, task, variants, batch, dim, repeats, threads):
    # Memory runs serve every allocation >= 64 KiB with mmap so that freed tensors leave the
    # resident set at once; timing runs keep glibc's defaults (its heap reuse avoids page faults).
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536") if mode == "memory" else os.environ
    cmd = [sys.executable, __file__, "--child", mode, task, ",".join(variants), str(batch), str(dim), str(repeats),
           str(threads)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run(sizes, repeats, threads):
    rows = []
    for batch, dim in sizes:
        # Sub-millisecond steps are noisy on a shared machine: more of them, at the same total cost.
        steps = repeats * max(1, (512 // batch) ** 2)  # in blocks of (512 // batch) ** 2 (see child)
        for task, variants in TASKS.items():
            timing = _child("time", task, variants, batch, dim, steps, threads)
            for variant in variants:  # ours / peer step by step (interleaved, so paired): the ratio's spread
                ours = timing[variant].pop("cpu_steps_ms")
                timing[variant]["paired"] = {
                    peer: _quantiles([a / b for a, b in zip(ours, timing[peer]["cpu_steps_ms"])])
                    for peer in variants if peer != variant and "cpu_steps_ms" in timing[peer]
                } if variant == "ours" else {}
            for variant in variants:
                res = {**timing[variant], **_child("memory", task, [variant], batch, dim, repeats, threads)}
                rows.append({"task": task, "variant": variant, "B": batch, "D": dim, **res})
                print(f"B={batch:5d} D={dim} {task:36s} {variant:9s} cpu {res['cpu_ms']:8.2f} ms "
                      f"(min {res['cpu_min_ms']:.2f}) wall {res['wall_ms']:8.2f} ms {res['peak_mib']:7.1f} MiB", flush=True)
    return rows


def _quantiles(values, low=0.1, high=0.9):
    ordered = sorted(values)
    return ordered[int(low * (len(ordered) - 1))], ordered[round(high * (len(ordered) - 1))]


def summary(rows):
    """The headline: ours / official CPU time per size and task."""
    parts = [f"{r['B']}x{r['D']} {r['task'].split()[0]} {r['cpu_ms'] / o['cpu_ms']:.2f}x"
             for r in rows if r["variant"] == "ours"
             for o in rows if (o["task"], o["B"], o["D"], o["variant"]) == (r["task"], r["B"], r["D"], "official")]
    return "loss+mining time vs official (goal <= 1.0x at every size): " + ", ".join(parts)


def table(rows):
    lines = ["| B x D | task | variant | CPU ms/step (median) | wall ms | peak MiB | time vs official "
             "(paired p10-p90) | time vs pml (paired p10-p90) | memory vs official | memory vs pml |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    resolution = 0.5  # MiB: smaller peaks come from already-resident heap memory and do not show

    for r in rows:
        peers = {v["variant"]: v for v in rows if (v["task"], v["B"], v["D"]) == (r["task"], r["B"], r["D"])}

        def ratio(key, peer, r=r, peers=peers):
            if r["variant"] != "ours" or peer not in peers:
                return ""
            if key == "peak_mib" and min(r[key], peers[peer][key]) < resolution:
                return "n/a"
            spread = ""
            if key == "cpu_ms" and peer in r.get("paired", {}):
                low, high = r["paired"][peer]
                spread = f" ({low:.2f}-{high:.2f})"
            return f"**{r[key] / peers[peer][key]:.2f}x**{spread}"

        peak = f"{r['peak_mib']:.1f}" if r["peak_mib"] >= resolution else f"< {resolution}"
        lines.append(f"| {r['B']} x {r['D']} | {r['task']} | {r['variant']} | {r['cpu_ms']:.1f} | {r['wall_ms']:.1f} "
                     f"| {peak} | {ratio('cpu_ms', 'official')} | {ratio('cpu_ms', 'pml')} "
                     f"| {ratio('peak_mib', 'official')} | {ratio('peak_mib', 'pml')} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: small sizes, few repeats, no results file")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per run (default 1: CPU time is then a clean measure on a shared machine)")
    parser.add_argument("--repeats", type=int, default=30, help="steps per variant at B=512 (x16 at B=128)")
    parser.add_argument("--child", nargs=7, metavar=("MODE", "TASK", "VARIANTS", "B", "D", "REPEATS", "THREADS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, task, variants, batch, dim, repeats, threads = args.child
        print(json.dumps(child(mode, task, variants, int(batch), int(dim), int(repeats), int(threads))))
        return
    check_equivalence()
    if args.quick:
        print("summary:", summary(run([(128, 64)], repeats=3, threads=args.threads)))
        return
    # 128 x 64: the paper's CUB / Cars batches; 512 and 2048 x 512: SOP / In-Shop scale.
    rows = run([(128, 64), (512, 512), (2048, 512)], repeats=args.repeats, threads=args.threads)
    print("summary:", summary(rows))
    import torch

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        "# Loss + mining, forward + backward (CPU, float32)\n\n"
        f"Command: `python experiments/bench/bench_losses.py --threads {args.threads} --repeats {args.repeats}`. "
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{rows[0]['threads']} torch thread(s) per run.\n\n"
        "Time: median CPU time of the process per step (`time.process_time`, user + system, so page "
        "faults count and time spent waiting for a core shared with other jobs does not); wall is the "
        "median wall time. Peak memory: growth of the peak resident set over one step in a fresh process "
        "(see the script's docstring). Ratios: ours / peer (goals: <= 1.0x official at every size, <= 0.5x official at SOP scale, <= 1.0x pml). All "
        "variants include the L2 normalisation of the raw features (the official loss and PML's cosine "
        "distance do it inside). Paired p10-p90: the spread of the per-step ratio ours / peer over the "
        "interleaved steps (each step of ours against the peer's step right after it).\n\n"
        + table(rows) + "\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
