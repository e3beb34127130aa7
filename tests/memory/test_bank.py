"""The FIFO bank: order, wrap-around, oversized batches, state_dict round trip."""
from __future__ import annotations

import pytest
import torch

from hardneg.memory import MemoryBank


def rows(start: int, stop: int, dim: int = 2):
    """Embeddings whose first coordinate is their position in the stream."""
    ids = torch.arange(start, stop)
    return ids.float()[:, None].repeat(1, dim), ids % 3, ids


def test_fills_in_order_then_wraps_around_dropping_the_oldest():
    bank = MemoryBank(size=5, dim=2)
    assert len(bank) == 0 and bank.get()[0].shape == (0, 2)
    bank.enqueue(*rows(0, 3))
    emb, labels, idx = bank.get()
    assert idx.tolist() == [0, 1, 2] and labels.tolist() == [0, 1, 2] and emb[:, 0].tolist() == [0, 1, 2]
    bank.enqueue(*rows(3, 7))  # 7 seen, 5 kept: 2..6, oldest first
    emb, labels, idx = bank.get()
    assert len(bank) == 5 and idx.tolist() == [2, 3, 4, 5, 6] and emb[:, 0].tolist() == [2, 3, 4, 5, 6]
    assert labels.tolist() == [i % 3 for i in range(2, 7)]
    bank.enqueue(*rows(7, 9))
    assert bank.get()[2].tolist() == [4, 5, 6, 7, 8]


def test_a_batch_larger_than_the_bank_keeps_its_newest_rows():
    bank = MemoryBank(size=4, dim=2)
    bank.enqueue(*rows(0, 3))
    bank.enqueue(*rows(3, 13))
    assert bank.get()[2].tolist() == [9, 10, 11, 12]
    bank.enqueue(*rows(13, 14))
    assert bank.get()[2].tolist() == [10, 11, 12, 13]
    assert int(bank.total) == 14


def test_entries_are_detached_copies():
    bank = MemoryBank(size=4, dim=2)
    e = torch.randn(2, 2, requires_grad=True)
    bank.enqueue(e * 2, torch.tensor([0, 1]))
    assert not bank.get()[0].requires_grad
    assert bank.get()[2].tolist() == [-1, -1]  # no dataset index given


def test_state_dict_round_trip_restores_contents_and_write_position():
    bank = MemoryBank(size=5, dim=2)
    bank.enqueue(*rows(0, 7))
    restored = MemoryBank(size=5, dim=2)
    restored.load_state_dict(bank.state_dict())
    for a, b in zip(bank.get(), restored.get()):
        assert torch.equal(a, b)
    bank.enqueue(*rows(7, 9))
    restored.enqueue(*rows(7, 9))
    assert torch.equal(bank.get()[0], restored.get()[0])


def test_rejects_bad_sizes():
    with pytest.raises(ValueError, match="memory.size"):
        MemoryBank(size=0, dim=2)
    with pytest.raises(ValueError, match="2-d"):
        MemoryBank(size=3, dim=2).enqueue(torch.zeros(1, 3), torch.zeros(1, dtype=torch.long))
