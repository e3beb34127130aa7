"""Study: hn, shn and sct with and without a cross-batch memory on the glyph testbed.

    python experiments/xbm_study.py run --methods hn sct --seeds 0 1 2 --epochs 20 [--jobs-of 2 --job 0]
    python experiments/xbm_study.py table      # -> experiments/xbm_study/README.md

Each run is the default glyph testbed (frozen backbone, cached features, linear head) with
``experiment=<method>``, with ``memory=none`` or ``memory=xbm`` (bank of ``--bank`` embeddings, used
from ``--start-step``), evaluated every 2 epochs so collapse timing is visible. One JSON per run
under experiments/xbm_study/runs/; ``--jobs-of N --job i`` runs every N-th job (parallel shells).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

OUT = Path(__file__).parent / "xbm_study"
MEMORIES = ("none", "xbm")


def jobs(args):
    return [(m, mem, s) for m in args.methods for mem in MEMORIES for s in args.seeds]


def overrides(method: str, memory: str, seed: int, args, tmp: str) -> list[str]:
    return [
        f"experiment={method}", f"memory={memory}", f"seed={seed}", f"trainer.max_epochs={args.epochs}",
        "trainer.check_val_every_n_epoch=2", "logger=none", "trainer.enable_progress_bar=false",
        "callbacks.progress_bar=null", "callbacks.collapse.action=continue", "callbacks.triplet_space=null",
        "callbacks.retrieval_examples=null", f"paths.output_dir={tmp}/{method}-{memory}-s{seed}",
        *([f"memory.size={args.bank}", f"memory.start_step={args.start_step}"] if memory == "xbm" else []),
    ]


def run(args) -> None:
    from hardneg.config import compose
    from hardneg.run import train

    (OUT / "runs").mkdir(parents=True, exist_ok=True)
    todo = jobs(args)[args.job::args.jobs_of]
    with tempfile.TemporaryDirectory() as tmp:
        for method, memory, seed in todo:
            path = OUT / "runs" / f"{method}-{memory}-s{seed}.json"
            if path.exists():
                continue
            cmd = overrides(method, memory, seed, args, tmp)
            result = train(compose(cmd))
            collapse = result["summary"].get("collapse", {})
            path.write_text(json.dumps({
                "method": method, "memory": memory, "seed": seed, "overrides": cmd,
                "history": result["history"], "final": result["final"], "train": result["train"],
                "collapse_since_epoch": collapse.get("since_epoch"),
                "mean_similarity": collapse.get("mean_similarity"),
            }, indent=1))
            print(f"done {path.name}: R@1 {result['final']['recall@1']:.4f}", flush=True)


def mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {std:.3f}"


def table(args) -> None:
    runs = [json.loads(p.read_text()) for p in sorted((OUT / "runs").glob("*.json"))]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["method"], r["memory"]), []).append(r)
    lines = [
        "| method | memory | seeds | R@1 epoch 0 | R@1 final | best R@1 (epoch) | MAP@R final | test mean sim. final "
        "| collapsed (first epoch > 0.9) | hn_ratio last step | hn_ratio batch / bank negatives | bank share |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (method, memory), rs in sorted(groups.items()):
        first = [r["history"][0][1]["recall@1"] for r in rs]
        final = [r["final"]["recall@1"] for r in rs]
        best = [max((m["recall@1"], e) for e, m in r["history"]) for r in rs]
        mapr = [r["final"].get("map@r") for r in rs]
        sim = [float(list(r["mean_similarity"].values())[-1]) if r.get("mean_similarity") else None for r in rs]
        collapsed = [r["collapse_since_epoch"] for r in rs]
        col = f"{sum(c is not None for c in collapsed)}/{len(rs)}" + (
            f" (epochs {', '.join(str(c) for c in collapsed if c is not None)})" if any(c is not None for c in collapsed) else "")
        hn = [r["train"].get("hn_ratio") for r in rs]
        split = f"{mean_std([r['train'].get('hn_ratio_batch') for r in rs])} / {mean_std([r['train'].get('hn_ratio_bank') for r in rs])}"
        share = mean_std([r["train"].get("bank_negative_share") for r in rs])
        best_txt = mean_std([b[0] for b in best]) + f" ({', '.join(str(b[1]) for b in best)})"
        lines.append(f"| {method} | {memory} | {len(rs)} | {mean_std(first)} | {mean_std(final)} | {best_txt} | "
                     f"{mean_std(mapr)} | {mean_std(sim)} | {col} | {mean_std(hn)} | {split} | {share} |")
    text = "\n".join(lines)
    print(text)
    (OUT / "table.md").write_text(text + "\n")
    figure(groups)


def figure(groups) -> None:
    """R@1 and test mean similarity per evaluation, mean over seeds (shaded: min..max)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for (method, memory), rs in sorted(groups.items()):
        style = dict(label=f"{method} + {memory}", linestyle="-" if memory == "xbm" else "--")
        epochs = [e for e, _ in rs[0]["history"]]
        curves = {
            0: [[m["recall@1"] for _, m in r["history"]] for r in rs],
            1: [[float(v) for v in r["mean_similarity"].values()] for r in rs if r.get("mean_similarity")],
        }
        for i, ys in curves.items():
            n = min(len(y) for y in ys)
            mean = [sum(y[j] for y in ys) / len(ys) for j in range(n)]
            line, = axes[i].plot(epochs[:n], mean, **style)
            axes[i].fill_between(epochs[:n], [min(y[j] for y in ys) for j in range(n)],
                                 [max(y[j] for y in ys) for j in range(n)], color=line.get_color(), alpha=0.15)
    axes[0].set(xlabel="epoch", ylabel="test Recall@1", title="Recall@1 (mean over seeds, band: min-max)")
    axes[1].set(xlabel="epoch", ylabel="mean pairwise cosine similarity", title="test embeddings: collapse at 1")
    axes[1].axhline(0.9, color="grey", linewidth=0.8, linestyle=":")
    for ax in axes:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(OUT / "curves.png", dpi=110)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["run", "table"])
    parser.add_argument("--methods", nargs="+", default=["hn", "shn", "sct"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--bank", type=int, default=1024)
    parser.add_argument("--start-step", type=int, default=0)
    parser.add_argument("--jobs-of", type=int, default=1)
    parser.add_argument("--job", type=int, default=0)
    args = parser.parse_args(argv)
    (run if args.action == "run" else table)(args)


if __name__ == "__main__":
    sys.exit(main())
