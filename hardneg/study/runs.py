"""Read a multirun's job directories into one flat record per run.

A job directory holds ``results.json`` (written by ``train``), ``.hydra/overrides.yaml``
and ``analysis/`` (per-epoch triplet counts, per-evaluation test points). A job without
``results.json`` failed or is still running: it is returned apart, never silently dropped.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass
class RunRecord:
    """What the study reports about one finished run."""

    run_dir: Path
    method: str
    seed: int
    final: dict[str, float]
    initial: dict[str, float]
    history: list[tuple[int, dict[str, float]]]
    geometry: dict[int, dict[str, float]]  # evaluation epoch -> mean_similarity, effective_rank, ...
    collapse: dict
    hn_ratio: list[tuple[int, float]] = field(default_factory=list)  # training epoch -> hard share

    @property
    def last_epoch(self) -> int:
        return self.history[-1][0] if self.history else 0

    @property
    def collapsed(self) -> bool:
        return bool(self.collapse.get("collapsed"))

    def end_geometry(self, key: str) -> float | None:
        if not self.geometry:
            return None
        return self.geometry[max(self.geometry)].get(key)


def overrides_of(job_dir: Path) -> list[str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    return (yaml.safe_load(path.read_text()) or []) if path.exists() else []


def override_value(overrides: list[str], key: str) -> str | None:
    for o in overrides:
        name, _, value = o.lstrip("+~").partition("=")
        if name == key:
            return value
    return None


def method_of(overrides: list[str]) -> str:
    """``experiment=<name>`` names the method; without one, the loss/mining pair does."""
    experiment = override_value(overrides, "experiment")
    if experiment:
        return experiment
    loss, mining = override_value(overrides, "loss"), override_value(overrides, "mining")
    return f"{loss or 'sct'}/{mining or 'easy_hard'}"


def hn_ratio_curve(run_dir: Path) -> list[tuple[int, float]]:
    """The share of mined training triplets with S_an > S_ap, per training epoch."""
    from hardneg.analysis.artifacts import load_train_counts

    return [(epoch, c.hard / c.count) for epoch, c in load_train_counts(run_dir) if c.count]


def read_run(job_dir: Path) -> RunRecord:
    result = json.loads((job_dir / "results.json").read_text())
    overrides = overrides_of(job_dir)
    summary = result.get("summary") or {}
    geometry = {int(epoch): values for epoch, values in (summary.get("test_geometry") or {}).items()}
    seed = override_value(overrides, "seed")
    return RunRecord(
        run_dir=job_dir,
        method=method_of(overrides),
        seed=int(seed) if seed is not None else 0,
        final=result.get("final") or {},
        initial=result.get("initial") or {},
        history=[(int(e), m) for e, m in result.get("history") or []],
        geometry=geometry,
        collapse=summary.get("collapse") or {},
        hn_ratio=hn_ratio_curve(job_dir) if (job_dir / "analysis").is_dir() else [],
    )


def find_runs(sweep_dir: Path) -> tuple[list[RunRecord], list[Path]]:
    """(finished runs, job directories without results) under ``sweep_dir``, in path order."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir} is not a directory; pass the multirun (sweep) directory of a study")
    done, missing = [], []
    for overrides_file in sorted(sweep_dir.glob("**/.hydra/overrides.yaml")):
        job = overrides_file.parent.parent
        (done if (job / "results.json").exists() else missing).append(job)
    return [read_run(job) for job in done], missing
