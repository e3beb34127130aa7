"""Redraw every figure of a finished run from what it saved, without retraining.

    python -m hardneg.analyze run_dir=outputs/2025-01-01/12-00-00 [out=some/folder]

Reads ``<run_dir>/config.yaml`` and ``<run_dir>/analysis/`` (written by the
TripletSpaceCallback) and writes, under ``out`` (default ``<run_dir>/figures``): the training
triplet diagram of every epoch, the test triplet diagram of every evaluation, the hn_ratio and
collapse curves, the loss's gradient field, and retrieval grids for the evaluations whose
embeddings were kept (these need the dataset itself: glyphs are re-rendered, benchmarks must be
on disk; otherwise they are skipped with a note).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from hardneg.analysis import artifacts
from hardneg.analysis.figures import DEFAULT_SCT_THRESHOLD

log = logging.getLogger("hardneg")


def _describe(cfg: DictConfig) -> tuple[str, object | None]:
    """'LossName(options), pos positive / neg negative' and the loss object if it can be built."""
    from hydra.utils import get_class, instantiate

    loss = None
    loss_cfg = cfg.get("loss")
    if loss_cfg is not None and getattr(get_class(loss_cfg._target_), "needs_triplets", True):
        loss = instantiate(loss_cfg)
    if loss is not None:
        name = f"{type(loss).__name__}({loss.extra_repr()})"
    else:
        name = loss_cfg._target_.rsplit(".", 1)[-1] if loss_cfg is not None else "unknown loss"
    mining = cfg.get("mining") or {}
    return f"{name}, {mining.get('pos', '?')} positive / {mining.get('neg', '?')} negative", loss


def _retrieval_grids(cfg: DictConfig, run_dir: Path, out: Path | None) -> list[Path]:
    from hydra.utils import instantiate

    from hardneg.analysis.retrieval_examples import image_test_set, pick_queries, write_retrieval_grid

    saved = artifacts.load_embeddings(run_dir)
    if not saved:
        return []
    try:
        datamodule = instantiate(cfg.data)
        datamodule.setup()
    except Exception as err:  # noqa: BLE001 - missing benchmark files etc.: the other figures still count
        print(f"retrieval grids skipped: the test images could not be loaded ({err})")
        return []
    dataset = image_test_set(datamodule)
    if dataset is None:
        return []
    options = (cfg.get("callbacks") or {}).get("retrieval_examples") or {}
    num, k, seed = options.get("num_queries", 6), options.get("top_k", 5), options.get("seed", 0)
    queries = pick_queries(saved[0]["labels"], num, seed, saved[0].get("is_query"))
    names = (getattr(datamodule, "class_names", None) or {}).get("test")
    paths = []
    for record in saved:
        epoch = record["epoch"]
        paths.append(write_retrieval_grid(
            dataset, record, artifacts.figure_path(run_dir, "retrieval", epoch, out), queries, k,
            getattr(datamodule, "mean", None), getattr(datamodule, "std", None), names,
            f"epoch {epoch}: queries (left) and top-{k} results, green = same class"))
    return paths


def regenerate(run_dir: str | Path, out: str | Path | None = None) -> list[Path]:
    """Write every figure of ``run_dir`` again; return their paths."""
    from hardneg.analysis.curves import plot_collapse, plot_hn_ratio
    from hardneg.analysis.gradient_field import write_gradient_field
    from hardneg.analysis.triplet_diagram import plot_test_diagram, plot_train_diagram

    run_dir = Path(run_dir)
    if not (run_dir / artifacts.ANALYSIS_DIR).is_dir():
        raise FileNotFoundError(
            f"{run_dir / artifacts.ANALYSIS_DIR} does not exist: run_dir must be a run directory trained with "
            "the triplet_space callback on (callbacks.triplet_space in conf/callbacks/default.yaml)")
    cfg = OmegaConf.load(run_dir / "config.yaml") if (run_dir / "config.yaml").exists() else OmegaConf.create({})
    described, loss = _describe(cfg) if cfg else ("unknown loss", None)
    paths = []
    train = artifacts.load_train_counts(run_dir)
    for epoch, counts in train:
        paths.append(plot_train_diagram(counts, artifacts.figure_path(run_dir, "train_triplets", epoch, out),
                                        f"mined training triplets, epoch {epoch}\n{described}"))
    if train:
        paths.append(plot_hn_ratio(train, artifacts.figure_path(run_dir, "hn_ratio", out_dir=out),
                                   f"mined training triplets\n{described}"))
    evaluations = artifacts.load_test_evals(run_dir)
    for record in evaluations:
        epoch = record["epoch"]
        paths.append(plot_test_diagram(
            record["points"], record["correct"], artifacts.figure_path(run_dir, "test_triplets", epoch, out),
            f"test split, epoch {epoch}: best positive vs best negative per anchor\n{described}",
            record.get("threshold", DEFAULT_SCT_THRESHOLD)))
    if evaluations:
        collapse_cfg = (cfg.get("callbacks") or {}).get("collapse") or {}
        paths.append(plot_collapse(evaluations, artifacts.figure_path(run_dir, "collapse", out_dir=out),
                                   f"test embeddings\n{described}", collapse_cfg.get("threshold")))
    if loss is not None:
        paths.append(write_gradient_field(loss, artifacts.figure_path(run_dir, "gradient_field", out_dir=out)))
    paths += _retrieval_grids(cfg, run_dir, out) if cfg else []
    return paths


def _parse(argv: list[str]) -> dict[str, str]:
    options = {"run_dir": None, "out": None}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in options:
            raise SystemExit(f"usage: python -m hardneg.analyze run_dir=<run directory> [out=<folder>]; got {arg!r}")
        options[key] = value
    if not options["run_dir"]:
        raise SystemExit("usage: python -m hardneg.analyze run_dir=<run directory> [out=<folder>]")
    return options


def main(argv: list[str] | None = None) -> list[Path]:
    options = _parse(sys.argv[1:] if argv is None else argv)
    try:
        paths = regenerate(options["run_dir"], options["out"])
    except FileNotFoundError as err:
        print(f"hardneg.analyze: error: {err}", file=sys.stderr)
        sys.exit(2)
    for path in paths:
        print(path)
    print(f"{len(paths)} figures written")
    return paths


if __name__ == "__main__":
    main()
