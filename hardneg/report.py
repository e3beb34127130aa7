"""The results table printed at the end of a run."""
from __future__ import annotations

from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table


def print_results(result: dict, cfg: DictConfig, console: Console | None = None) -> None:
    console = console or Console()
    initial, final = result["initial"], result["final"]
    last_epoch = result["history"][-1][0]
    title = (
        f"{cfg.data._target_.rsplit('.', 1)[-1].removesuffix('DataModule')} test split, "
        f"loss={cfg.loss._target_.rsplit('.', 1)[-1]} mining={cfg.mining.pos}/{cfg.mining.neg}"
    )
    table = Table(title=title)
    table.add_column("metric")
    if initial:
        table.add_column("epoch 0", justify="right")
    table.add_column(f"epoch {last_epoch}", justify="right")
    if initial:
        table.add_column("change", justify="right")
    for key, value in final.items():
        row = [key]
        if initial:
            row.append(f"{initial[key]:.4f}")
        row.append(f"{value:.4f}")
        if initial:
            row.append(f"{value - initial[key]:+.4f}")
        table.add_row(*row)
    console.print(table)
    collapse = (result.get("summary") or {}).get("collapse") or {}
    if collapse.get("collapsed"):
        console.print(f"[bold yellow]embedding collapse:[/] {collapse.get('message', '')}")
    if result.get("corrupt_images"):
        console.print(f"[yellow]{result['corrupt_images']} unreadable image(s) replaced by grey substitutes "
                      "(data.on_corrupt)[/]")
    if result.get("skipped_steps"):
        console.print(f"[yellow]{result['skipped_steps']} step(s) skipped for a non-finite loss[/]")
    console.print(f"run directory: {result['run_dir']}")
