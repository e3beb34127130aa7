"""Collapse diagnostics: a constant set is collapsed, random unit vectors are not."""
import math

import pytest
import torch
import torch.nn.functional as F

from hardneg.analysis.collapse import collapse_stats, dims_in_use, effective_rank, mean_similarity


def random_unit(n=400, d=32, seed=0):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=1)


def test_constant_embeddings_are_fully_collapsed():
    e = F.normalize(torch.randn(1, 16), dim=1).repeat(50, 1)
    stats = collapse_stats(e)
    assert stats["mean_similarity"] == pytest.approx(1.0, abs=1e-6)
    assert stats["effective_rank"] == pytest.approx(1.0, abs=1e-3)
    assert stats["dims_in_use"] == 0.0


def test_random_unit_vectors_are_spread_out():
    e = random_unit()
    stats = collapse_stats(e)
    assert abs(stats["mean_similarity"]) < 0.02
    assert stats["effective_rank"] > 0.8 * e.shape[1]
    assert stats["dims_in_use"] == 1.0
    assert stats["sv_entropy"] == pytest.approx(math.log(stats["effective_rank"]))


def test_mean_similarity_matches_the_explicit_pairwise_mean():
    e = F.normalize(torch.randn(30, 8) + 1.0, dim=1)  # a shared offset: clearly positive similarities
    sim = e @ e.T
    brute = (sim.sum() - sim.diagonal().sum()) / (30 * 29)
    assert mean_similarity(e) == pytest.approx(float(brute), abs=1e-6)
    assert mean_similarity(e * 3.0) == pytest.approx(float(brute), abs=1e-6)  # normalises itself


def test_effective_rank_counts_the_spanned_directions():
    basis = torch.eye(8)[:3]  # embeddings spread evenly over 3 orthogonal directions
    rank, _ = effective_rank(basis.repeat(10, 1))
    assert rank == pytest.approx(3.0, rel=1e-4)


def test_dims_in_use_ignores_dead_coordinates():
    e = random_unit(200, 8)
    e[:, 4:] = 0.0  # half the coordinates never vary
    assert dims_in_use(e) == 0.5
