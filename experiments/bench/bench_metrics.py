"""Retrieval evaluation at SOP-like scale: hardneg's ranking pass vs pytorch-metric-learning.

    python experiments/bench/bench_metrics.py                 # N = 20,000 -> results/metrics.md
    python experiments/bench/bench_metrics.py --n 60502       # SOP's test-set size
    python experiments/bench/bench_metrics.py --quick         # small smoke run, prints only

Data (seeded, D = 512, SOP-like classes: N / 5.35 classes of 2..12 items, shuffled), two kinds:
- random:    unit vectors with no class structure (Recall@1 ~ 0): worst case for pruning.
- clustered: a unit centre per class plus Gaussian noise (``--noise``), normalised: a realistic
             Recall@1 (~0.6-0.9), where positives rank near the top.
Variants, each computing Recall@{1,10,100,1000}, MAP@R and R-Precision (leave-one-out):
- ours:        hardneg.metrics.retrieval_metrics: one ``rank`` pass with the block-maxima fast path.
- definition:  the same with ``rank(fast=False)``: each chunk's rows fully sorted (the readable
               definition the tests hold the fast path against). This says whether the fast path pays.
- pml:         pytorch-metric-learning's AccuracyCalculator (its default FaissKNN), k = 1000, with
               recall_at_{10,100,1000} added as custom metrics (precision_at_1 is Recall@1).
- before / after: a whole evaluation as the training loop runs it, at commit BEFORE_COMMIT (the
               metrics pass, then a second N x N pass for the triplet diagram's best positive and
               negative) and now (``evaluate_embeddings``: one pass, plus collapse statistics).
- gemm:        the N x N x D float32 matmul alone, in row chunks of 4096: an exact kNN's floor.
Method: one process, ``torch.set_num_threads(--threads)`` (faiss too), every variant run once per
round, rounds interleaved (A B C D, A B C D, ...) so that load changes hit all alike; median and
min-max over rounds; ratios of medians. The metric values of every variant are cross-checked.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "metrics.md"
SOP_N, SOP_CLASSES = 60_502, 11_316
KS = (1, 10, 100, 1000)


# ----------------------------------------------------------------------------- data
def make_data(n, dim, seed=0):
    import torch

    gen = torch.Generator().manual_seed(seed)
    n_classes = max(1, round(n * SOP_CLASSES / SOP_N))
    # sizes = 2 + Binomial(10, p): 2..12 with the SOP mean, then nudged to sum to n exactly.
    p = min(1.0, max(0.0, (n / n_classes - 2) / 10))
    sizes = 2 + torch.binomial(torch.full((n_classes,), 10.0), torch.full((n_classes,), p), generator=gen).long()
    while int(sizes.sum()) != n:
        diff = n - int(sizes.sum())
        room = (sizes < 12) if diff > 0 else (sizes > 2)
        cand = room.nonzero().flatten()
        pick = cand[torch.randperm(len(cand), generator=gen)[: abs(diff)]]
        sizes[pick] += 1 if diff > 0 else -1
    labels = torch.repeat_interleave(torch.arange(n_classes), sizes)
    labels = labels[torch.randperm(n, generator=gen)]
    x = torch.randn(n, dim, generator=gen)
    x /= x.norm(dim=1, keepdim=True)  # in place: no second copy in anyone's peak memory
    return x, labels


# ----------------------------------------------------------------------------- variants
def run_pml(x, labels, args):
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    def recall_at(k):
        def calculate(self, knn_labels, query_labels, **kwargs):
            return (knn_labels[:, :k] == query_labels[:, None]).any(1).double().mean().item()

        return calculate

    class WithRecall(AccuracyCalculator):
        calculate_recall_at_10 = recall_at(10)
        calculate_recall_at_100 = recall_at(100)
        calculate_recall_at_1000 = recall_at(1000)

        def requires_knn(self):
            return super().requires_knn() + ["recall_at_10", "recall_at_100", "recall_at_1000"]

    include = (
        "precision_at_1",
        "recall_at_10",
        "recall_at_100",
        "recall_at_1000",
        "mean_average_precision_at_r",
        "r_precision",
    )
    got = WithRecall(include=include, k=max(KS), device=x.device).get_accuracy(x, labels)
    names = {"precision_at_1": "recall@1", "mean_average_precision_at_r": "map@r", "r_precision": "r_precision"}
    return {names.get(k, k.replace("recall_at_", "recall@")): float(v) for k, v in got.items()}


def run_gemm(x, labels, args):
    import torch

    rows = 4096
    out = torch.zeros(rows, len(x))  # touched once here, so page faults are not timed
    total = 0.0
    for a in range(0, len(x), rows):
        q = x[a : a + rows]
        t0 = time.perf_counter()
        torch.mm(q, x.T, out=out[: len(q)])
        total += time.perf_counter() - t0
    return {"gemm_seconds": total}


def clustered(x, labels, noise: float, seed: int = 1):
    """Class centres plus noise of norm ~``noise``, normalised (same labels as ``x``)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    dim = x.shape[1]
    centres = torch.nn.functional.normalize(torch.randn(int(labels.max()) + 1, dim, generator=gen), dim=1)
    z = centres[labels] + noise * torch.randn(len(labels), dim, generator=gen) / dim**0.5
    return torch.nn.functional.normalize(z, dim=1)


def run_ours(x, labels, fast=True):
    from unittest import mock

    from hardneg.metrics import ranking, retrieval_metrics

    if fast:
        return retrieval_metrics(x, labels, ks=KS)
    original = ranking.rank
    with mock.patch.object(ranking, "rank", lambda *a, **k: original(*a, **{**k, "fast": False})), \
            mock.patch("hardneg.metrics.retrieval.rank", lambda *a, **k: original(*a, **{**k, "fast": False})):
        return retrieval_metrics(x, labels, ks=KS)


BEFORE_COMMIT = "bb34b47"  # the last commit with the two-pass evaluation (metrics, then best pos/neg)


def load_before():
    """``retrieval_metrics`` as of BEFORE_COMMIT, read with ``git show`` and run in this process.
    Its ``_chunks`` helpers are unchanged since; ``prepare_pair`` moved (same behaviour for float32)."""
    import subprocess
    import types

    root = Path(__file__).resolve().parents[2]
    source = subprocess.run(["git", "show", f"{BEFORE_COMMIT}:hardneg/metrics/retrieval.py"], cwd=root,
                            capture_output=True, text=True, check=True).stdout
    source = source.replace("from hardneg.metrics.knn import check_backend, prepare_pair",
                            "from hardneg.metrics.knn import check_backend\nfrom hardneg.metrics.ranking import prepare_pair")
    module = types.ModuleType("retrieval_before")
    exec(compile(source, f"{BEFORE_COMMIT}:hardneg/metrics/retrieval.py", "exec"), module.__dict__)
    return module.retrieval_metrics


def run_before(x, labels):
    """Before: the metrics pass, plus the separate best-positive/best-negative pass of the test
    triplet diagram (``best_match_points`` as it was: masked maxima over row chunks), plus the
    collapse statistics, computed by two callbacks."""
    import torch

    from hardneg.analysis.collapse import collapse_stats

    out = load_before()(x, labels, ks=KS)
    collapse_stats(x), collapse_stats(x)  # the collapse detector and the triplet-space callback, each
    for start in range(0, len(x), 1024):
        sim = x[start:start + 1024] @ x.T
        same = labels[start:start + 1024, None] == labels[None, :]
        rows = torch.arange(len(sim))
        sim[rows, rows + start] = -float("inf")
        sim.masked_fill(~same, -float("inf")).amax(dim=1), sim.masked_fill(same, -float("inf")).amax(dim=1)
    return out


def run_after(x, labels):
    """After: one Evaluation (metrics, best positive/negative and neighbours from one pass)."""
    from hardneg.evaluation import evaluate_embeddings

    return evaluate_embeddings(x, labels, ks=KS).metrics


VARIANTS = {
    "ours": lambda x, y: run_ours(x, y, fast=True),
    "before (2 passes)": run_before,
    "after (Evaluation)": run_after,
    "definition": lambda x, y: run_ours(x, y, fast=False),
    "pml": lambda x, y: run_pml(x, y, None),
    "gemm": lambda x, y: run_gemm(x, y, None),
}


def bench(x, labels, variants, rounds):
    times = {v: [] for v in variants}
    values = {}
    for _ in range(rounds):
        for name in variants:  # interleaved: every variant once per round
            t0 = time.perf_counter()
            values[name] = VARIANTS[name](x, labels)
            times[name].append(time.perf_counter() - t0)
    return times, values


def table(kind, n, times, values):
    med = {v: statistics.median(t) for v, t in times.items()}
    lines = [f"### {kind} embeddings, N = {n:,}", "",
             "| variant | median (s) | min-max (s) | × pml | × gemm |", "|---|---:|---:|---:|---:|"]
    for v, t in times.items():
        ratio_pml = f"{med[v] / med['pml']:.2f}" if "pml" in med else "-"
        ratio_gemm = f"{med[v] / med['gemm']:.2f}" if "gemm" in med else "-"
        lines.append(f"| {v} | {med[v]:.2f} | {min(t):.2f}-{max(t):.2f} | {ratio_pml} | {ratio_gemm} |")
    keys = ["recall@1", "recall@10", "recall@100", "recall@1000", "map@r", "r_precision"]
    lines += ["", "| variant | " + " | ".join(keys) + " |", "|---" + "|---:" * len(keys) + "|"]
    for v, got in values.items():
        if "recall@1" in got:
            lines.append(f"| {v} | " + " | ".join(f"{got[k]:.6f}" for k in keys) + " |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--noise", type=float, default=2.5, help="clustered data: noise norm (2.5: R@1 ~ 0.7)")
    parser.add_argument("--variants", default="ours,definition,pml,gemm,before (2 passes),after (Evaluation)")
    parser.add_argument("--quick", action="store_true", help="N = 3000, 2 rounds, print only")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the markdown goes")
    args = parser.parse_args()
    if args.quick:
        args.n, args.rounds = 3000, 2
    import torch

    torch.set_num_threads(args.threads)
    try:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    except ImportError:
        pass
    variants = args.variants.split(",")
    x, labels = make_data(args.n, args.dim)
    load = os.getloadavg()[0]
    sections = []
    for kind, data in (("random", x), ("clustered", clustered(x, labels, args.noise))):
        times, values = bench(data, labels, variants, args.rounds)
        sections.append(table(kind, args.n, times, values))
        print(sections[-1], flush=True)
    header = (
        "# Retrieval metrics: one ranking pass vs pytorch-metric-learning\n\n"
        f"`python experiments/bench/bench_metrics.py --n {args.n} --rounds {args.rounds}`: leave-one-out "
        f"Recall@{{1,10,100,1000}} + MAP@R + R-Precision, D = {args.dim}, SOP-like classes (2-12 items). "
        f"{args.rounds} interleaved rounds, median and min-max; {args.threads} threads (torch and faiss). "
        f"Machine: {os.cpu_count()} CPUs, {platform.machine()}, torch {torch.__version__}; load average "
        f"{load:.1f} before, {os.getloadavg()[0]:.1f} after (a shared machine: other jobs inflate every time, "
        "interleaving spreads that over all variants).\n\n"
    )
    if not args.quick:
        args.out.write_text(header + "\n".join(sections))


if __name__ == "__main__":
    main()
