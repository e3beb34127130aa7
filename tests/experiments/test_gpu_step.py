"""experiments/bench/gpu_step.py runs end to end on CPU with a tiny model (the GPU run is the same code)."""
from __future__ import annotations

import json
import math

from experiments.bench.gpu_step import main


def test_tiny_run_reports_throughput_split_and_evaluation(tmp_path):
    out = tmp_path / "gpu_step.json"
    results = main(["--tiny", "--json", str(out)])
    (train,) = results["train"]
    assert set(train["split_ms"]) == {"data wait", "forward", "mining+loss", "backward"}
    assert all(v > 0 for v in train["split_ms"].values())
    assert math.isclose(train["step_ms"], sum(train["split_ms"].values()))
    assert math.isclose(train["images_per_s"], train["batch"] / train["step_ms"] * 1000)
    assert results["eval"]["items"] == 400 and results["eval"]["seconds"] > 0
    assert json.loads(out.read_text())["train"][0]["preset"] == "tiny"
