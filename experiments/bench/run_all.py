"""``make bench``: every benchmark part, one after another, each a script writing experiments/bench/results/*.md.

    python experiments/bench/run_all.py                       # full runs (tens of minutes on 2 cores)
    python experiments/bench/run_all.py --quick               # smoke runs at small sizes, nothing written
    python experiments/bench/run_all.py --parts losses lightning

Parts: losses (loss + mining vs the official code and PML), metrics (retrieval metrics vs PML),
loader (the image pipeline, reference vs fast path), lightning (the Trainer's overhead per step),
ddp (one-device equivalence and the cost of the gathers). Each script measures its variants side
by side in one run and prints its headline as lines starting with ``summary:``; they are repeated
together at the end. Run on an otherwise idle machine: ratios measured within one run cancel much
of a shared machine's load, but not all of it.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PARTS = {
    "losses": "bench_losses.py",
    "metrics": "bench_metrics.py",
    "loader": "bench_loader.py",
    "lightning": "bench_lightning.py",
    "ddp": "bench_ddp.py",
}


def run_part(name: str, quick: bool) -> tuple[int, list[str]]:
    script = HERE / PARTS[name]
    if not script.exists():
        print(f"{script.name} is missing", file=sys.stderr)
        return 1, []
    cmd = [sys.executable, str(script)] + (["--quick"] if quick else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    summary = []
    for line in proc.stdout:  # echo as it comes, keep the headline
        print(line, end="", flush=True)
        if line.startswith("summary:"):
            summary.append(f"{name}: {line[len('summary:'):].strip()}")
    return proc.wait(), summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    args = parser.parse_args()
    failed, summary = [], []
    for name in args.parts:
        print(f"== {name} ({PARTS[name]})", flush=True)
        code, lines = run_part(name, args.quick)
        summary += lines
        if code != 0:
            failed.append(name)
    print("\n== summary")
    print("\n".join(summary) if summary else "(no part printed a summary line)")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
