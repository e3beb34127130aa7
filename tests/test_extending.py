"""docs/extending.md's worked example runs as written: a new negative strategy in one function."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from hardneg.mining import TripletMiner
from hardneg.mining.negatives import NEGATIVE_STRATEGIES

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def _example_code() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    (code,) = [b for b in blocks if "second_hardest" in b]
    return code


def _second_hardest_by_loop(sim, labels, triplets):
    """For every mined (anchor, positive): the negative ranked second by similarity (first
    column on ties, as argmax), by a plain loop over the anchor's other-class references."""
    expected = []
    for a in triplets.anchor.tolist():
        others = [c for c in range(sim.shape[1]) if labels[c] != labels[a]]
        hardest = max(others, key=lambda c: (sim[a, c].item(), -c))
        rest = [c for c in others if c != hardest]
        expected.append(max(rest, key=lambda c: (sim[a, c].item(), -c)))
    return expected


def _batch():
    g = torch.Generator().manual_seed(0)
    e = F.normalize(torch.randn(24, 5, generator=g, dtype=torch.float64), dim=1)
    return e @ e.T, torch.arange(24) // 3


def test_the_documented_strategy_registers_and_mines_its_definition():
    namespace = {}
    exec(compile(_example_code(), str(DOC), "exec"), namespace)
    try:
        sim, labels = _batch()
        triplets = TripletMiner("easy", "second_hardest")(sim, labels, labels, torch.arange(24))
        assert len(triplets) == 24
        assert triplets.negative.tolist() == _second_hardest_by_loop(sim, labels, triplets)
    finally:
        NEGATIVE_STRATEGIES.pop("second_hardest", None)


def test_the_documented_strategy_works_by_import_path_and_from_the_config(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    (tmp_path / "my_mining.py").write_text(_example_code())
    monkeypatch.syspath_prepend(str(tmp_path))
    name = "my_mining.second_hardest_negative"
    try:
        conf = Path(__file__).resolve().parents[1] / "conf"
        with initialize_config_dir(config_dir=str(conf), version_base=None):
            cfg = compose(config_name="config", overrides=["mining.pos=easy", f"mining.neg={name}"])
        miner = instantiate(cfg.mining)
        sim, labels = _batch()
        triplets = miner(sim, labels, labels, torch.arange(24))
        assert triplets.negative.tolist() == _second_hardest_by_loop(sim, labels, triplets)
    finally:
        NEGATIVE_STRATEGIES.pop(name, None)
        NEGATIVE_STRATEGIES.pop("second_hardest", None)
        sys.modules.pop("my_mining", None)
