"""The blocked row-wise argmax/argmin equals torch's max/min(dim=1), first index on ties."""
from __future__ import annotations

import pytest
import torch

from hardneg.mining.reduce import row_max, row_min


@pytest.mark.parametrize("cols", [5, 64, 65, 97, 130])
@pytest.mark.parametrize("block", [4, 32])
def test_equals_torch_including_ties_and_infinities(cols, block):
    g = torch.Generator().manual_seed(cols)
    x = torch.randint(-3, 4, (40, cols), generator=g).float()  # many ties per row
    x[0] = float("-inf")  # a row with no candidate
    x[1] = float("inf")
    x[2, -1] = 10.0  # the best in the remainder columns
    x[3, 0] = -10.0
    x[4, ::7] = float("-inf")
    for ours, reference in ((row_max, torch.max), (row_min, torch.min)):
        values, index = ours(x, block=block)
        expected = reference(x, dim=1)
        assert torch.equal(values, expected.values)
        assert torch.equal(index, expected.indices)


def test_float64_and_a_single_row():
    x = torch.tensor([[0.5, 0.25, 0.5, 0.75, 0.75, 0.1, 0.75, 0.2]], dtype=torch.float64)
    assert row_max(x, block=2)[1].item() == 3 and row_min(x, block=2)[1].item() == 5
