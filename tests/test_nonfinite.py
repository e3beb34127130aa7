"""The non-finite guard: the loss *and* the gradient are checked, one policy, the right advice."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hardneg.nonfinite import NonFiniteGuard, NonFiniteLossError, broken_weights, gradient_norm
from hardneg.run import train


def test_skip_counts_and_stops_after_the_configured_streak_naming_that_setting():
    guard = NonFiniteGuard("skip", max_consecutive=2)
    guard.step_bad("loss", "step 1")
    guard.step_ok()  # a good step ends the streak
    guard.step_bad("gradient", "step 3")
    guard.step_bad("gradient", "step 4")
    with pytest.raises(NonFiniteLossError) as err:
        guard.step_bad("gradient", "step 5", "gradient norm inf")
    message = str(err.value)
    assert "max_consecutive_nonfinite=2" in message and "Set nonfinite=skip" not in message
    assert "non-finite gradient at step 5 (gradient norm inf); 4 step(s) skipped" in message
    restored = NonFiniteGuard("skip", 2)
    restored.load_state_dict(guard.state_dict())
    assert (restored.skipped_steps, restored.consecutive) == (4, 3)


def test_stop_policy_and_broken_weights_give_their_own_advice():
    with pytest.raises(NonFiniteLossError, match="Set nonfinite=skip"):
        NonFiniteGuard("stop").step_bad("loss", "step 1")
    with pytest.raises(NonFiniteLossError, match=r"weights themselves are unusable: net.w is NaN.*optim.optimizer.lr"):
        NonFiniteGuard("skip", 10).step_bad("loss", "step 2", broken="net.w is NaN")
    with pytest.raises(ValueError, match="choose one of"):
        NonFiniteGuard("sometimes")


def test_gradient_norm_sees_one_overflowing_entry():
    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))
    assert gradient_norm([a, b]) is None
    a.grad, b.grad = torch.tensor([3.0, 0.0, 0.0]), torch.tensor([4.0, 0.0])
    assert gradient_norm([a, b]).item() == pytest.approx(5.0)
    b.grad[1] = float("inf")
    assert not torch.isfinite(gradient_norm([a, b]))


def test_broken_weights_are_told_apart_from_a_bad_batch():
    net = torch.nn.Linear(2, 2)
    x = torch.ones(1, 2)
    assert broken_weights(net, x, net(x)) is None
    assert broken_weights(net, torch.full((1, 2), float("nan")), torch.full((1, 2), float("nan"))) is None  # bad input
    with torch.no_grad():
        net.weight.fill_(1e37)
    assert "largest |weight| 1e+37" in broken_weights(net, torch.full((1, 2), 1e3), net(torch.full((1, 2), 1e3)))
    with torch.no_grad():
        net.bias[0] = float("inf")
    assert "1 weight tensor(s) hold NaN/inf (first: bias)" == broken_weights(net, x, net(x))


def test_a_huge_learning_rate_stops_at_once_naming_the_learning_rate(make_cfg):
    """lr=1e38: the first step's loss is finite, the weights it leaves (~1e37) overflow every later
    forward pass; the run stops at the next step instead of skipping max_consecutive_nonfinite."""
    cfg = make_cfg(["optim.optimizer.lr=1e38", "callbacks.triplet_space=null", "callbacks.retrieval_examples=null"])
    with pytest.raises(NonFiniteLossError, match="weights themselves are unusable.*optim.optimizer.lr") as err:
        train(cfg)
    saved = json.loads(Path(cfg.paths.output_dir, "results.json").read_text())
    assert saved["status"] == "stopped" and saved["reason"] == str(err.value) and saved["skipped_steps"] >= 1
