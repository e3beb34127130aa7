"""``python -m hardneg.study --report-only``: README with table, verdicts, command and figures."""
from hardneg.study.__main__ import main
from tests.study.test_study_table import make_study


def test_report_only_writes_table_verdicts_and_figures(tmp_path):
    make_study(tmp_path / "sweep")
    out = tmp_path / "report"
    assert main(["--report-only", str(tmp_path / "sweep"), "--out", str(out), "--methods", "hn", "shn", "sct"]) == 0
    readme = (out / "README.md").read_text()
    assert "Report made by: `python -m hardneg.study --report-only" in readme
    assert "| sct | 3 |" in readme and "**hn collapses**: holds" in readme
    assert "1 without results" in readme  # the unfinished job is named, not dropped
    for name in ("recall_at_1", "hn_ratio", "test_triplets_grid"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000
        assert f"figures/{name}.png" in readme
    assert (out / "table.md").read_text().startswith("| method | seeds |")


def test_unknown_method_is_rejected_by_name(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["--report-only", str(tmp_path), "--methods", "nonsense"])
    assert "no conf/experiment/nonsense.yaml" in capsys.readouterr().err


def test_missing_sweep_dir_is_a_clear_error(tmp_path, capsys):
    assert main(["--report-only", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")]) == 2
    assert "is not a directory" in capsys.readouterr().err
