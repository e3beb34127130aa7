import pytest

from hardneg.metrics import _chunks

# (rows per matmul, columns per block maximum, entries per counting slab): the defaults, and
# small ones so that small test sets go through many chunks, slabs and block-pruning paths.
BLOCKS = [(_chunks.ROW_BLOCK, _chunks.COL_BLOCK, _chunks.SLAB), (8, 4, 64), (16, 2, 1000)]


@pytest.fixture(params=BLOCKS, ids=lambda b: f"rows{b[0]}-cols{b[1]}-slab{b[2]}")
def blocks(request, monkeypatch):
    rows, cols, slab = request.param
    monkeypatch.setattr(_chunks, "ROW_BLOCK", rows)
    monkeypatch.setattr(_chunks, "COL_BLOCK", cols)
    monkeypatch.setattr(_chunks, "SLAB", slab)
    return request.param
