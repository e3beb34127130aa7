"""The paper's tables beside measured ones: run a whole table as a sweep, or aggregate one.

    # run: 5 seeds x hn, shn, sct of one dataset's official recipe (experiment=paper/<data>_<method>)
    python -m hardneg.study.paper_table run cub                          # one job after another
    python -m hardneg.study.paper_table run cars --launcher joblib      # local parallel jobs
    python -m hardneg.study.paper_table run sop --launcher submitit_slurm -- hydra.launcher.partition=gpu
    # aggregate a finished (or partial) sweep:
    python -m hardneg.study.paper_table show multirun/paper/cub

``show`` prints, per dataset and method, the measured mean ± std over seeds beside the
paper's reported number (hardneg/study/paper_results.yaml, the one copy of those numbers).
"""
from __future__ import annotations

import argparse
import functools
import re
import shlex
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import yaml

from hardneg.study.runs import RunRecord, find_runs
from hardneg.study.table import Stat

PAPER_METHODS = ("hn", "shn", "sct")
LAUNCHERS = ("basic", "joblib", "submitit_slurm")
_PRESET = re.compile(r"^paper/(?P<data>[a-z0-9]+)_(?P<method>[a-z]+)$")


@functools.cache
def paper_results() -> dict:
    return yaml.safe_load((Path(__file__).with_name("paper_results.yaml")).read_text())


def sweep_command(data: str, seeds: list[int], launcher: str, sweep_dir: Path | None, extra: list[str]) -> list[str]:
    if data not in paper_results():
        raise SystemExit(f"unknown dataset {data!r}; choose one of {sorted(paper_results())}")
    if launcher not in LAUNCHERS:
        raise SystemExit(f"--launcher {launcher!r} is unknown; choose one of {list(LAUNCHERS)}")
    command = [sys.executable, "-m", "hardneg.run", "-m",
               f"experiment={','.join(f'paper/{data}_{m}' for m in PAPER_METHODS)}",
               f"seed={','.join(map(str, seeds))}"]
    if launcher != "basic":
        command.append(f"hydra/launcher={launcher}")
    command.append(f"hydra.sweep.dir={sweep_dir or Path('multirun/paper') / data}")
    return command + list(extra)


def preset_of(run: RunRecord) -> tuple[str, str] | None:
    """(dataset, method) of a run of ``experiment=paper/<data>_<method>``, else None."""
    m = _PRESET.match(run.method)
    return (m["data"], m["method"]) if m else None


def paper_cell(data: str, method: str, metric: str) -> str:
    reported = paper_results().get(data, {}).get(method)
    if reported == "collapse":
        return "collapse"
    if isinstance(reported, dict) and metric in reported:
        return f"{reported[metric]:.2f}"
    return "–"


def measured_cell(runs: list[RunRecord], metric: str) -> str:
    values = [r.final[metric] for r in runs if metric in r.final]
    if not values:
        return "–"
    text = Stat(values).fmt(100, 2)
    collapsed = sum(r.collapsed for r in runs)
    return text + (f" (collapsed {collapsed}/{len(runs)})" if collapsed else "")


def tables(runs: list[RunRecord]) -> str:
    """One markdown table per dataset found among ``runs``: measured beside reported."""
    grouped: dict[str, dict[str, list[RunRecord]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        preset = preset_of(run)
        if preset:
            grouped[preset[0]][preset[1]].append(run)
    if not grouped:
        return "no runs of experiment=paper/<data>_<method> presets found"
    out = []
    for data, methods in sorted(grouped.items()):
        spec = paper_results().get(data, {})
        metrics = spec.get("metrics") or sorted({k for rs in methods.values() for r in rs for k in r.final})
        header = ["method", "seeds", *(f"{k.replace('recall', 'R')} measured | paper" for k in metrics)]
        lines = [f"### {data}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for method in [m for m in PAPER_METHODS if m in methods] + sorted(set(methods) - set(PAPER_METHODS)):
            rs = methods[method]
            cells = [f"{measured_cell(rs, k)} \\| {paper_cell(data, method, k)}" for k in metrics]
            lines.append(f"| {method} | {len(rs)} | " + " | ".join(cells) + " |")
        epoch0 = [r.initial["recall@1"] for rs in methods.values() for r in rs if "recall@1" in r.initial]
        if epoch0:
            paper0 = spec.get("epoch0_recall@1")
            lines.append("")
            lines.append(f"Epoch-0 R@1 measured {Stat(epoch0).fmt(100, 2)}"
                         + (f", paper about {paper0}" if paper0 is not None else "") + ".")
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n\nMeasured: mean ± sample std over seeds, percent. Paper: ResNet-50, mean of 5 runs.\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hardneg.study.paper_table", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run a whole paper table (3 methods x seeds) as one Hydra sweep")
    run.add_argument("data", choices=sorted(paper_results()))
    run.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    run.add_argument("--launcher", default="basic", choices=LAUNCHERS)
    run.add_argument("--sweep-dir", type=Path)
    run.add_argument("--dry-run", action="store_true", help="print the command only")
    run.add_argument("overrides", nargs="*", help="extra Hydra overrides (after --)")
    argv = list(sys.argv[1:] if argv is None else argv)
    # argparse's sub-commands do not take "--" themselves: everything after it is an override
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    show = sub.add_parser("show", help="print measured beside reported numbers for a sweep directory")
    show.add_argument("sweep_dir", type=Path)
    show.add_argument("--out", type=Path, help="also write the tables to this markdown file")
    args = p.parse_args(argv)
    if args.cmd == "run":
        command = sweep_command(args.data, args.seeds, args.launcher, args.sweep_dir, args.overrides + extra)
        print(shlex.join(command), flush=True)
        if args.dry_run:
            return 0
        code = subprocess.call(command)
        sweep_dir = Path(args.sweep_dir or Path("multirun/paper") / args.data)
        if sweep_dir.is_dir():
            print(tables(find_runs(sweep_dir)[0]))
        return code
    try:
        runs, missing = find_runs(args.sweep_dir)
    except FileNotFoundError as err:
        print(f"hardneg: error: {err}", file=sys.stderr)
        return 2
    text = tables(runs)
    if missing:
        text += f"\n{len(missing)} job(s) without results (failed or running): " + ", ".join(map(str, missing)) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
