"""Row-wise max with its index, as ``x.max(dim=1)`` (first index on ties), faster on CPU.

Why: on CPU torch's max-with-index kernel does not vectorise, while ``amax`` does (about 10x
faster on a [512, 512] float32 matrix). So take ``amax`` over short blocks of each row, the
max-with-index over the few block maxima (the first block that holds the row's max), and the
max-with-index inside that one block only. The first index of the max overall lies in the
first block that contains it, so ties resolve exactly as in ``x.max(dim=1)``.
"""
from __future__ import annotations

import torch
from torch import Tensor

BLOCK = 32  # columns per block: long enough for amax to vectorise, short for the final gather


def row_max(x: Tensor, block: int = BLOCK) -> tuple[Tensor, Tensor]:
    """(values, indices) of the maximum of each row of ``x`` [A, M], first index on ties."""
    return _row_best(x, block, largest=True)


def row_min(x: Tensor, block: int = BLOCK) -> tuple[Tensor, Tensor]:
    """(values, indices) of the minimum of each row, first index on ties."""
    return _row_best(x, block, largest=False)


def _row_best(x: Tensor, block: int, largest: bool) -> tuple[Tensor, Tensor]:
    best, best_of = (torch.max, torch.amax) if largest else (torch.min, torch.amin)
    rows, cols = x.shape
    num_blocks = cols // block
    if x.device.type != "cpu" or num_blocks < 2:
        return best(x, dim=1)
    main = x[:, : num_blocks * block].unflatten(1, (num_blocks, block))  # a view, no copy
    values, best_block = best(best_of(main, dim=2), dim=1)  # the first block holding the best
    inside = main.gather(1, best_block.view(rows, 1, 1).expand(rows, 1, block)).squeeze(1)  # [A, block]
    index = best_block * block + best(inside, dim=1).indices
    if num_blocks * block < cols:  # the columns after the last whole block
        rest_values, rest_index = best(x[:, num_blocks * block :], dim=1)
        later = rest_values > values if largest else rest_values < values  # strict: ties keep the earlier
        values = torch.where(later, rest_values, values)
        index = torch.where(later, rest_index + num_blocks * block, index)
    return values, index
