"""Write a study's report: README.md (table, verdicts, command), table.md, figures/."""
from __future__ import annotations

import logging
from pathlib import Path

import yaml

from hardneg.study.runs import find_runs
from hardneg.study.table import by_method, table, verdicts

log = logging.getLogger(__name__)


def sweep_settings(sweep_dir: Path) -> dict:
    """A few settings of the sweep's first job (epochs, model, optimiser) for the report."""
    for cfg_file in sorted(Path(sweep_dir).glob("**/config.yaml")):
        if cfg_file.parent.name == ".hydra":
            continue
        cfg = yaml.safe_load(cfg_file.read_text())
        opt = cfg.get("optim", {}).get("optimizer", {})
        return {
            "max_epochs": cfg.get("trainer", {}).get("max_epochs"),
            "model": cfg.get("model", {}).get("_target_", "").rsplit(".", 1)[-1],
            "backbone": cfg.get("model", {}).get("backbone"),
            "optimizer": f"{opt.get('_target_', '').rsplit('.', 1)[-1]} lr {opt.get('lr')}",
        }
    return {}


def write_report(sweep_dir: Path, out: Path, command: str, methods: list[str] | None = None) -> str:
    runs, missing = find_runs(sweep_dir)
    if not runs:
        raise SystemExit(f"no finished runs (results.json) under {sweep_dir}")
    out = Path(out)
    figures = out / "figures"
    groups = by_method(runs, methods)
    settings = sweep_settings(sweep_dir)
    text = table(groups, settings.get("max_epochs"))
    launched = sorted(Path(sweep_dir).glob("**/study_command.txt"), key=lambda f: f.stat().st_mtime)  # reruns add one
    lines = [
        "# Study: hn, shn, sct and baselines",
        "",
        *(["Runs made by: " + "; then ".join(f"`{f.read_text().strip()}`" for f in launched)
           + " (each part's Hydra command: [commands.sh](commands.sh))", ""] if launched else []),
        f"Report made by: `{command}`",
        "",
        f"Runs: {len(runs)} finished under `{sweep_dir}`"
        + (f"; {len(missing)} without results (failed or unfinished): "
           + ", ".join(f"`{m}`" for m in missing) if missing else "") + ".",
        f"Setting: {', '.join(f'{k} {v}' for k, v in settings.items())}.",
        "",
        "R@K, MAP@R, R-Precision and epoch-0 R@1 in percent, mean ± sample std over seeds; test mean "
        "similarity and effective rank of the test embeddings at the last evaluation; hn_ratio = share of "
        "mined training triplets with S_an > S_ap in the first and the last epoch.",
        "",
        text,
        "",
        "## The paper's claims, as measured",
        "",
        *(f"- {v}" for v in verdicts(groups)),
        "",
        "## Figures",
        "",
    ]
    from hardneg.analysis import study_figures as sf

    made = [
        sf.plot_recall_bars(groups, figures / "recall_at_1.png"),
        sf.plot_hn_ratio_curves(groups, figures / "hn_ratio.png"),
        sf.plot_triplet_grid(groups, figures / "test_triplets_grid.png", seed=min(r.seed for r in runs)),
        sf.tile_gradient_fields(groups, figures / "gradient_fields.png"),
    ]
    lines += [f"![{p.stem}](figures/{p.name})" for p in made if p is not None]
    out.mkdir(parents=True, exist_ok=True)
    commands = sorted(Path(sweep_dir).glob("**/commands.sh"))
    if commands:
        (out / "commands.sh").write_text("".join(f.read_text() for f in commands))
    (out / "table.md").write_text(text + "\n")
    report = "\n".join(lines) + "\n"
    (out / "README.md").write_text(report)
    return report
