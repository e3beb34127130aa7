"""The study's table and verdicts on fabricated runs with known answers."""
from hardneg.study.runs import find_runs, method_of
from hardneg.study.table import by_method, table, verdicts
from tests.study.fake_runs import fake_run


def make_study(root, sct_end=(0.60, 0.62, 0.61), shn_end=(0.50, 0.52, 0.51), hn_end=(0.30, 0.28, 0.31)):
    for seed in range(3):
        fake_run(root, f"hn{seed}", ["logger=none", f"seed={seed}", "experiment=hn"], 0.32, hn_end[seed],
                 sim_end=0.99, rank_end=2.0, collapsed=True, hn_ratio=(0.9, 0.8))
        fake_run(root, f"shn{seed}", ["logger=none", f"seed={seed}", "experiment=shn"], 0.32, shn_end[seed],
                 hn_ratio=(0.9, 0.5))
        fake_run(root, f"sct{seed}", ["logger=none", f"seed={seed}", "experiment=sct"], 0.32, sct_end[seed],
                 hn_ratio=(0.9, 0.3))
    fake_run(root, "sct_running", ["seed=3", "experiment=sct"], 0, 0, finished=False)


def test_runs_are_read_with_method_seed_and_hn_ratio(tmp_path):
    make_study(tmp_path)
    runs, missing = find_runs(tmp_path)
    assert len(runs) == 9 and missing == [tmp_path / "sct_running"]
    sct0 = next(r for r in runs if r.method == "sct" and r.seed == 0)
    assert sct0.hn_ratio == [(1, 0.9), (20, 0.3)]
    assert sct0.end_geometry("effective_rank") == 40.0
    assert method_of(["loss=nca", "mining=easy_semihard"]) == "nca/easy_semihard"


def test_table_has_every_column_as_mean_and_std(tmp_path):
    make_study(tmp_path)
    groups = by_method(find_runs(tmp_path)[0], ["hn", "shn", "sct"])
    assert list(groups) == ["hn", "shn", "sct"]
    text = table(groups, max_epochs=20)
    sct_row = next(line for line in text.splitlines() if line.startswith("| sct "))
    # R@1 of 0.60, 0.62, 0.61: mean 61.0, sample std 1.0; epoch 0 32.0 ± 0.0
    assert "| sct | 3 | 32.0 ± 0.0 | 61.0 ± 1.0 |" in sct_row
    assert "0.90 ± 0.00 → 0.30 ± 0.00" in sct_row and "no (0/3)" in sct_row
    hn_row = next(line for line in text.splitlines() if line.startswith("| hn "))
    assert "yes (3/3)" in hn_row and "0.990 ± 0.000" in hn_row and "2.0 ± 0.0" in hn_row
    for column in ("MAP@R", "R-Precision", "test mean sim.", "eff. rank", "hn_ratio start → end", "stopped at"):
        assert column in text.splitlines()[0]


def test_verdicts_follow_the_measurements(tmp_path):
    make_study(tmp_path / "a")
    lines = verdicts(by_method(find_runs(tmp_path / "a")[0]))
    assert lines[0].startswith("**hn collapses**: holds") and "3/3" in lines[0]
    assert lines[1].startswith("**hn ends at or below its epoch-0 R@1**: holds")
    assert "std): holds" in lines[2] and "difference 10.0 points" in lines[2]
    assert lines[3].startswith("**sct's hn_ratio falls during training**: holds")
    # sct below shn beyond the spread, hn above its epoch 0: the verdicts say so
    make_study(tmp_path / "b", sct_end=(0.40, 0.41, 0.42), hn_end=(0.40, 0.40, 0.40))
    lines = verdicts(by_method(find_runs(tmp_path / "b")[0]))
    assert "does not hold" in lines[1] and "0/3" in lines[1]
    assert "does not hold (sct below shn beyond the spread)" in lines[2]
    # a difference smaller than the seed spread is not called a win
    make_study(tmp_path / "c", sct_end=(0.50, 0.55, 0.53), shn_end=(0.49, 0.54, 0.51))
    assert "within the seed spread" in verdicts(by_method(find_runs(tmp_path / "c")[0]))[2]
