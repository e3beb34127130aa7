"""Aggregate a Hydra multirun into the paper's kind of table: mean ± std over seeds.

Every column of the README's results table: the metrics, the epoch-0 R@1, the test
embeddings' mean cosine similarity and effective rank at the last evaluation, the mined
hard-triplet share (hn_ratio) in the first and last training epoch, and the collapse verdict.

    python -m hardneg.run -m loss=sct,nca mining=easy_hard,easy_semihard seed=0,1,2
    python experiments/aggregate.py multirun/2026-11-29/10-00-00 [--metrics recall@1 map@r] [--out table.md]

Every job directory holds ``results.json`` (written by ``train``) and ``.hydra/overrides.yaml``;
jobs are grouped by their overrides without ``seed``. Jobs that failed (no results.json) are
listed, not silently dropped.
"""
from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

import yaml

from hardneg.study.runs import hn_ratio_curve


def load_jobs(sweep_dir: Path) -> tuple[dict[str, list[dict]], list[Path], list[str]]:
    """Results grouped by the overrides that vary between jobs (seed excluded), failed jobs,
    and the overrides common to all jobs."""
    jobs = []
    for overrides_file in sorted(sweep_dir.glob("**/.hydra/overrides.yaml")):
        jobs.append((overrides_file.parent.parent, yaml.safe_load(overrides_file.read_text()) or []))
    common = [o for o in (jobs[0][1] if jobs else []) if all(o in overrides for _, overrides in jobs)]
    groups: dict[str, list[dict]] = defaultdict(list)
    failed = []
    for job, overrides in jobs:
        key = " ".join(o for o in overrides if not o.startswith("seed=") and o not in common) or "(defaults)"
        results = job / "results.json"
        if results.exists():
            result = json.loads(results.read_text())
            result["hn_ratio_curve"] = hn_ratio_curve(job) if (job / "analysis").is_dir() else []
            groups[key].append(result)
        else:
            failed.append(job)
    return groups, failed, [o for o in common if not o.startswith("seed=")]


def mean_std(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
    if not values:
        return "–"
    mean = scale * statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {scale * statistics.stdev(values):.{digits}f}"


def end_geometry(result: dict, key: str) -> float | None:
    """``key`` of the test embeddings at the last evaluation (summary.test_geometry)."""
    geometry = (result.get("summary") or {}).get("test_geometry") or {}
    return geometry[max(geometry, key=int)].get(key) if geometry else None


def table(groups: dict[str, list[dict]], metrics: list[str]) -> str:
    header = ["run", "seeds", "R@1 epoch 0", *metrics, "test mean sim.", "eff. rank", "hn_ratio start → end",
              "collapsed"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, runs in sorted(groups.items()):
        initial = [r["initial"]["recall@1"] for r in runs if r.get("initial")]
        cells = [mean_std([r["final"][m] for r in runs if m in r["final"]]) for m in metrics]
        sim = [v for v in (end_geometry(r, "mean_similarity") for r in runs) if v is not None]
        rank = [v for v in (end_geometry(r, "effective_rank") for r in runs) if v is not None]
        curves = [r["hn_ratio_curve"] for r in runs if r.get("hn_ratio_curve")]
        hn = f"{mean_std([c[0][1] for c in curves], 1)} → {mean_std([c[-1][1] for c in curves], 1)}" if curves else "–"
        collapsed = sum(bool((r.get("summary", {}).get("collapse") or {}).get("collapsed")) for r in runs)
        cells += [mean_std(sim, 1, 3), mean_std(rank, 1, 1), hn, f"{collapsed}/{len(runs)}"]
        lines.append(f"| {key} | {len(runs)} | {mean_std(initial)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--metrics", nargs="+", default=["recall@1", "recall@2", "recall@4", "recall@8", "map@r"])
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        raise SystemExit(f"{args.sweep_dir} is not a directory; pass a Hydra multirun directory")
    groups, failed, common = load_jobs(args.sweep_dir)
    if not groups:
        raise SystemExit(f"no finished jobs (results.json) under {args.sweep_dir}")
    text = table(groups, args.metrics) + "\n\nValues in percent, mean ± sample std over seeds."
    text += f" Common to all runs: {' '.join(common) or '(nothing)'}\n"
    if failed:
        text += "\nJobs without results (failed or running): " + ", ".join(str(f) for f in failed) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
