"""``python -m hardneg.study``: run the study (a Hydra multirun) and write its report.

    python -m hardneg.study                              # testbed=split, 7 methods x seeds 0 1 2
    python -m hardneg.study --testbed head --seeds 0 1 2 3 4
    python -m hardneg.study --report-only multirun/study/split   # redo table + figures only
    python -m hardneg.study -- trainer.max_epochs=10     # extra overrides for every run

Writes ``<out>/README.md`` (table, verdicts, the exact command), ``<out>/table.md`` and
``<out>/figures/*.png``.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from hardneg.study.testbeds import METHODS, TESTBEDS


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m hardneg.study", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--testbed", default="split", choices=sorted(TESTBEDS))
    p.add_argument("--methods", nargs="+", default=METHODS, help="experiment=<name> configs to compare")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=1, help="parallel processes (seeds are split between them)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per process")
    p.add_argument("--sweep-dir", type=Path, help="where the runs go (default multirun/study/<testbed>-<time>)")
    p.add_argument("--out", type=Path, help="report directory (default experiments/study/<testbed>)")
    p.add_argument("--report-only", type=Path, metavar="SWEEP_DIR", help="only aggregate an existing sweep")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run (after --)")
    args = p.parse_args(argv)
    for m in args.methods:
        if not (Path(__file__).resolve().parents[2] / "conf" / "experiment" / f"{m}.yaml").exists():
            from hardneg.config import config_dir

            if not (Path(config_dir()) / "experiment" / f"{m}.yaml").exists():
                p.error(f"--methods {m}: no conf/experiment/{m}.yaml; choose from {METHODS}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    out = args.out or Path("experiments/study") / args.testbed
    command = "python -m hardneg.study " + shlex.join(sys.argv[1:] if argv is None else argv)
    if args.report_only:
        sweep_dir, code = args.report_only, 0
    else:
        from hardneg.study.launch import part_commands, run_parts

        sweep_dir = args.sweep_dir or Path("multirun/study") / f"{args.testbed}-{time.strftime('%Y-%m-%d_%H-%M-%S')}"
        commands = part_commands(sweep_dir, args.testbed, args.methods, args.seeds, args.jobs, args.overrides)
        print(f"study: {len(args.methods)} methods x {len(args.seeds)} seeds on testbed {args.testbed!r}; "
              f"runs under {sweep_dir} (logs: {sweep_dir}/part*.log)", flush=True)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / "study_command.txt").write_text(command + "\n")  # --report-only shows it later
        code = run_parts(commands, sweep_dir, args.threads)
    from hardneg.study.report import write_report

    try:
        write_report(sweep_dir, out, command=command, methods=args.methods)
    except FileNotFoundError as err:
        print(f"hardneg: error: {err}", file=sys.stderr)
        return 2
    print(f"study report: {out / 'README.md'}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
