import pytest
import torch

from hardneg.errors import ConfigError
from hardneg.metrics import knn

from . import reference as ref


def check_against_reference(query, refs, k, exclude_self, **kwargs):
    sims, idx = knn(query, refs, k, exclude_self=exclude_self, **kwargs)
    want_sims, want_idx = ref.knn(query, refs, k, exclude_self)
    assert idx.tolist() == want_idx
    torch.testing.assert_close(sims.double(), torch.tensor(want_sims, dtype=torch.float64), atol=1e-6, rtol=0)
    return sims, idx


@pytest.mark.parametrize("k", [1, 3, 17, 60])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_random_matches_bruteforce(blocks, k, exclude_self):
    x = ref.unit(150, 16, seed=k)
    check_against_reference(x, x, k, exclude_self, chunk_size=32)


def test_query_vs_reference(blocks):
    q, r = ref.unit(40, 8, seed=1), ref.unit(90, 8, seed=2)
    check_against_reference(q, r, 5, False, chunk_size=16)


@pytest.mark.parametrize("k", [1, 2, 5, 20, 59])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_ties_go_to_lower_index(blocks, k, exclude_self):
    x = ref.tie_heavy(60, dim=3, seed=k)  # 27 distinct vectors for 60 rows: exact ties everywhere
    check_against_reference(x, x, k, exclude_self, chunk_size=7)


def test_all_identical():
    x = torch.ones(10, 4)
    sims, idx = knn(x, x, 3, exclude_self=True)
    assert idx.tolist() == [[j for j in range(10) if j != i][:3] for i in range(10)]
    assert (sims == 4).all()


@pytest.mark.parametrize("exclude_self", [False, True])
def test_k_larger_than_reference_is_clamped(exclude_self):
    x = ref.unit(12, 4)
    sims, idx = check_against_reference(x, x, 100, exclude_self)
    assert idx.shape == (12, 12 - exclude_self)
    assert all(
        sorted(row) == [j for j in range(12) if not (exclude_self and j == i)] for i, row in enumerate(idx.tolist())
    )


@pytest.mark.parametrize("dim", [37, 64])
def test_bitwise_identical_for_any_chunk_size(blocks, dim):
    x = ref.unit(600, dim, seed=3)
    runs = [knn(x, x, 11, exclude_self=True, chunk_size=c) for c in (1, 64, 511, 4096)]
    for sims, idx in runs[1:]:
        assert torch.equal(sims, runs[0][0]) and torch.equal(idx, runs[0][1])


def test_input_checks():
    x = ref.unit(5, 3)
    with pytest.raises(ConfigError, match=r"\['torch'\]"):
        knn(x, x, 1, backend="annoy")
    with pytest.raises(ValueError, match="same set"):
        knn(x, x[:4], 1, exclude_self=True)
    with pytest.raises(ValueError, match="dimension"):
        knn(x, ref.unit(5, 4), 1)


def test_faiss_backend_is_a_clear_error():
    """The faiss backend was removed (slower here, and it ordered exact ties differently)."""
    x = ref.unit(5, 3)
    with pytest.raises(ConfigError, match="eval.backend=faiss is no longer supported"):
        knn(x, x, 1, backend="faiss")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_gpu_matches_cpu():
    x = ref.unit(300, 16, seed=7)
    s_c, i_c = knn(x, x, 10, exclude_self=True)
    s_g, i_g = knn(x.cuda(), x.cuda(), 10, exclude_self=True)
    assert torch.equal(i_c, i_g.cpu())
    torch.testing.assert_close(s_c, s_g.cpu(), atol=1e-5, rtol=0)
