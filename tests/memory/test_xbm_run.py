"""memory=xbm through the real entry point: logged bank stats, the bank in the checkpoint,
a loss it cannot serve refused before training."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hardneg.errors import ConfigError


def test_xbm_run_logs_bank_stats_and_checkpoints_the_bank(make_cfg):
    from hardneg.run import train

    result = train(make_cfg(["memory=xbm", "memory.size=30", "eval.at_start=false"]))
    stats = result["train"]  # the last (3rd) step: 24 earlier samples in the bank
    assert stats["bank_size"] == 24 and 0 <= stats["bank_negative_share"] <= 1
    assert "hn_ratio_batch" in stats or "hn_ratio_bank" in stats
    checkpoint = torch.load(Path(result["run_dir"]) / "checkpoints" / "last.ckpt", weights_only=False)
    state = checkpoint["state_dict"]
    assert int(state["memory.bank.total"]) == 36 and state["memory.bank.embeddings"].shape == (30, 16)
    assert state["memory.bank.indices"].min() >= 0  # dataset indices of the remembered samples


def test_proxy_loss_with_memory_is_refused(make_cfg):
    from hardneg.run import train

    with pytest.raises(ConfigError, match="memory=none"):
        train(make_cfg(["memory=xbm", "loss=proxy_anchor"]))
