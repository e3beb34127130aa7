"""Run a study's Hydra multirun: one ``python -m hardneg.run -m`` per part, parts in parallel.

The seeds are split into ``jobs`` parts (whole seeds, so every part covers every method and
a partial study still compares all methods). Each part is a plain Hydra multirun with the
basic launcher (jobs one after another in one process, imports paid once); ``threads``
pins torch's CPU threads per part: on a shared machine two 2-thread processes spin against
each other, and one thread each is several times faster per step.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from hardneg.study.testbeds import overrides


def part_commands(sweep_dir: Path, testbed: str, methods: list[str], seeds: list[int], jobs: int,
                  extra: list[str]) -> list[list[str]]:
    """One command per part. Seed is swept first (outermost) so that runs finish seed by seed."""
    jobs = max(1, min(jobs, len(seeds)))
    parts = [seeds[i::jobs] for i in range(jobs)]
    commands = []
    for i, part in enumerate(parts):
        commands.append([
            sys.executable, "-m", "hardneg.run", "-m",
            f"seed={','.join(map(str, part))}",
            f"experiment={','.join(methods)}",
            *overrides(testbed), *extra,
            f"hydra.sweep.dir={sweep_dir / f'part{i}'}",
        ])
    return commands


def run_parts(commands: list[list[str]], sweep_dir: Path, threads: int) -> int:
    """Start every part, wait for all; logs in ``<sweep_dir>/part<i>.log``. Returns the worst exit code."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    (sweep_dir / "commands.sh").write_text("\n".join(shlex.join(c) for c in commands) + "\n")
    procs = []
    for i, command in enumerate(commands):
        log = open(sweep_dir / f"part{i}.log", "w")  # noqa: SIM115 - closed after wait
        procs.append((subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env), log))
    codes = []
    for proc, log in procs:
        codes.append(proc.wait())
        log.close()
    return max(codes)
