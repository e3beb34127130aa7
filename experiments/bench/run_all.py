"""``make bench``: every benchmark, one after another, each writing experiments/bench/results/*.md.

    python experiments/bench/run_all.py            # full runs (tens of minutes on 2 cores)
    python experiments/bench/run_all.py --quick    # smoke runs at small sizes, nothing written

Run on an otherwise idle machine: the scripts report ratios measured within one run, but
other jobs competing for the cores still add noise.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = ["bench_losses.py", "bench_metrics.py", "bench_ddp.py", "bench_loader.py"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="+", choices=BENCHES, default=BENCHES)
    args = parser.parse_args()
    failed = []
    for name in args.only:
        print(f"== {name}", flush=True)
        cmd = [sys.executable, str(HERE / name)] + (["--quick"] if args.quick else [])
        if subprocess.run(cmd).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
