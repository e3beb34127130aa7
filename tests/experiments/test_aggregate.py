"""The multirun aggregation groups jobs by their varying overrides and averages over seeds."""
import json

import yaml

from experiments.aggregate import load_jobs, table
from tests.study.fake_runs import fake_run


def fake_job(root, num, overrides, r1, collapsed=False):
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if r1 is not None:
        result = {"initial": {"recall@1": 0.3}, "final": {"recall@1": r1, "map@r": r1 / 2}, "summary": {"collapse": {"collapsed": collapsed}}}
        (job / "results.json").write_text(json.dumps(result))


def test_groups_by_varying_overrides_and_averages_seeds(tmp_path):
    fake_job(tmp_path, 0, ["loss=sct", "seed=0", "data=glyphs"], 0.5)
    fake_job(tmp_path, 1, ["loss=sct", "seed=1", "data=glyphs"], 0.7)
    fake_job(tmp_path, 2, ["loss=nca", "seed=0", "data=glyphs"], 0.4, collapsed=True)
    fake_job(tmp_path, 3, ["loss=nca", "seed=1", "data=glyphs"], None)  # failed job
    groups, failed, common = load_jobs(tmp_path)
    assert set(groups) == {"loss=sct", "loss=nca"} and common == ["data=glyphs"]
    assert failed == [tmp_path / "3"]
    text = table(groups, ["recall@1"])
    assert "| loss=sct | 2 | 30.00 ± 0.00 | 60.00 ± 14.14 | – | – | – | 0/2 |" in text
    assert "| loss=nca | 1 | 30.00 | 40.00 | – | – | – | 1/1 |" in text


def test_geometry_and_hn_ratio_columns(tmp_path):
    for seed, rank in ((0, 40.0), (1, 44.0)):
        fake_run(tmp_path, f"sct{seed}", ["experiment=sct", f"seed={seed}"], 0.3, 0.5, sim_end=0.02 * (seed + 1),
                 rank_end=rank, hn_ratio=(0.9, 0.3 + 0.1 * seed))
    groups, _, _ = load_jobs(tmp_path)
    header, _, row = table(groups, ["recall@1"]).splitlines()
    assert "test mean sim. | eff. rank | hn_ratio start → end" in header
    assert "| 0.030 ± 0.014 | 42.0 ± 2.8 | 0.90 ± 0.00 → 0.35 ± 0.07 | 0/2 |" in row
