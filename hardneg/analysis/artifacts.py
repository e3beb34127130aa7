"""What a run keeps so that ``python -m hardneg.analyze`` can redraw every figure later.

Layout under the run directory:
    analysis/train_epoch_001.pt   per training epoch: the triplet histogram and exact shares
    analysis/test_epoch_000.pt    per evaluation: each test anchor's (S_ap, S_an), NN correct,
                                  collapse diagnostics and metrics
    analysis/embeddings_epoch_000.pt  test embeddings (float16) of some evaluations
    figures/...                   the PNGs (see ``figure_path``)
Embeddings are the only large item (SOP: 60k x 512), so by default only the first and the
latest evaluation keep them (``keep="first_last"``); ``all`` keeps every one, ``none`` none.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from hardneg.analysis.triplet_diagram import TripletCounts

ANALYSIS_DIR, FIGURES_DIR = "analysis", "figures"
KEEP_EMBEDDINGS = ("first_last", "all", "none")


def figure_path(run_dir: str | Path, name: str, epoch: int | None = None, out_dir: str | Path | None = None) -> Path:
    """``figures/<name>.png`` or, per epoch, ``figures/<name>/epoch_007.png``."""
    root = Path(out_dir) if out_dir is not None else Path(run_dir) / FIGURES_DIR
    return root / f"{name}.png" if epoch is None else root / name / f"epoch_{epoch:03d}.png"


def _path(run_dir: str | Path, kind: str, epoch: int) -> Path:
    return Path(run_dir) / ANALYSIS_DIR / f"{kind}_epoch_{epoch:03d}.pt"


def _save(obj: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


def _epochs(run_dir: str | Path, kind: str) -> list[tuple[int, Path]]:
    pattern = re.compile(rf"{kind}_epoch_(\d+)\.pt$")
    found = [(int(m.group(1)), p) for p in (Path(run_dir) / ANALYSIS_DIR).glob(f"{kind}_epoch_*.pt")
             if (m := pattern.search(p.name))]
    return sorted(found)


def save_train_counts(run_dir: str | Path, epoch: int, counts: TripletCounts) -> Path:
    return _save({"epoch": epoch, **counts.state_dict()}, _path(run_dir, "train", epoch))


def load_train_counts(run_dir: str | Path) -> list[tuple[int, TripletCounts]]:
    out = []
    for epoch, path in _epochs(run_dir, "train"):
        state = torch.load(path, weights_only=True)
        state.pop("epoch")
        out.append((epoch, TripletCounts.from_state_dict(state)))
    return out


def save_test_eval(run_dir: str | Path, epoch: int, points, correct, geometry: dict, metrics: dict,
                   threshold: float) -> Path:
    record = {"epoch": epoch, "points": points.half(), "correct": correct.bool(), "geometry": dict(geometry),
              "metrics": dict(metrics), "threshold": threshold}
    return _save(record, _path(run_dir, "test", epoch))


def load_test_evals(run_dir: str | Path) -> list[dict]:
    return [torch.load(path, weights_only=True) for _, path in _epochs(run_dir, "test")]


def save_embeddings(run_dir: str | Path, epoch: int, evaluation: dict, keep: str = "first_last") -> Path | None:
    """Store this evaluation's test embeddings; under ``first_last`` drop older non-first ones."""
    if keep not in KEEP_EMBEDDINGS:
        raise ValueError(f"keep_embeddings={keep!r} is unknown; choose one of {list(KEEP_EMBEDDINGS)}")
    if keep == "none":
        return None
    record = {"epoch": epoch, "embeddings": evaluation["embeddings"].detach().cpu().half(),
              "labels": evaluation["labels"].cpu(), "indices": evaluation["indices"].cpu()}
    if evaluation.get("is_query") is not None:
        record["is_query"] = evaluation["is_query"].cpu()
    path = _save(record, _path(run_dir, "embeddings", epoch))
    if keep == "first_last":
        saved = _epochs(run_dir, "embeddings")
        for old_epoch, old in saved[1:]:
            if old_epoch != epoch:
                old.unlink(missing_ok=True)
    return path


def load_embeddings(run_dir: str | Path) -> list[dict]:
    return [torch.load(path, weights_only=True) for _, path in _epochs(run_dir, "embeddings")]
