"""Fabricated multirun job directories: what ``train`` and the analysis callbacks write,
with chosen numbers, so the study's aggregation can be checked against known answers."""
from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from hardneg.analysis.artifacts import save_test_eval, save_train_counts
from hardneg.analysis.triplet_diagram import TripletCounts


def fake_run(root: Path, name: str, overrides: list[str], r1_start: float, r1_end: float,
             sim_end: float = 0.1, rank_end: float = 40.0, collapsed: bool = False,
             hn_ratio: tuple[float, float] | None = None, epochs: int = 20, finished: bool = True) -> Path:
    job = Path(root) / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if not finished:
        return job
    final = {"recall@1": r1_end, "recall@2": r1_end + 0.1, "map@r": r1_end / 4, "r_precision": r1_end / 2}
    initial = {"recall@1": r1_start, "recall@2": r1_start + 0.1, "map@r": r1_start / 4, "r_precision": r1_start / 2}
    result = {
        "initial": initial, "final": final, "history": [[0, initial], [epochs, final]],
        "summary": {
            "test_geometry": {"0": {"mean_similarity": 0.5, "effective_rank": 45.0},
                              str(epochs): {"mean_similarity": sim_end, "effective_rank": rank_end}},
            "collapse": {"collapsed": collapsed},
        },
    }
    (job / "results.json").write_text(json.dumps(result))
    if hn_ratio is not None:  # per-epoch training triplet counts with the given hard share
        for epoch, share in zip((1, epochs), hn_ratio):
            counts = TripletCounts()
            n_hard = round(100 * share)
            counts.add(torch.tensor([[0.2, 0.5]] * n_hard + [[0.5, 0.2]] * (100 - n_hard)))
            save_train_counts(job, epoch, counts)
        for epoch in (0, epochs):
            points = torch.tensor([[0.5, 0.2], [0.3, 0.6], [0.9, 0.1]])
            save_test_eval(job, epoch, points, points[:, 0] > points[:, 1], {}, {"recall@1": r1_end}, 0.8)
    return job
