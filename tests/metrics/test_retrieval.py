import math

import pytest
import torch

from hardneg.errors import ConfigError
from hardneg.metrics import check_ks, kmeans, nmi, retrieval_metrics

from . import reference as ref

KS = (1, 2, 3, 8, 40)


def assert_same_metrics(got, want):
    assert got.keys() == want.keys()
    for key in want:
        if math.isnan(want[key]):
            assert math.isnan(got[key]), key
        else:
            assert got[key] == pytest.approx(want[key], abs=1e-12), key


def check(query, labels, reference=None, reference_labels=None, **kwargs):
    got = retrieval_metrics(query, labels, reference, reference_labels, ks=KS, **kwargs)
    want = ref.metrics(query, labels, reference, reference_labels, ks=KS)
    assert_same_metrics(got, want)
    return got


@pytest.mark.parametrize("seed", [0, 1])
def test_leave_one_out_random(blocks, seed):
    # Class sizes 1..9, singletons included: they are misses for Recall@K, outside MAP@R / R-Precision.
    sizes = [1, 1, 2, 3, 5, 9, 4, 2, 7, 6] * 8
    labels = ref.labels_with_sizes(sizes, seed=seed)
    x = ref.unit(len(labels), 8, seed=seed)
    check(x, labels, chunk_size=50)


def test_leave_one_out_ties(blocks):
    labels = ref.labels_with_sizes([1, 2, 3, 4, 5, 6, 7, 8, 20, 30], seed=3)
    x = ref.tie_heavy(len(labels), dim=3, seed=3)
    check(x, labels, chunk_size=13)


def test_query_vs_gallery_with_absent_class(blocks):
    gallery_labels = ref.labels_with_sizes([3, 1, 4, 1, 5, 9, 2, 6] * 6, seed=4)
    query_labels = torch.cat([gallery_labels[:50], torch.full((7,), 999)])  # class 999: not in the gallery
    q, g = ref.unit(len(query_labels), 6, seed=5), ref.unit(len(gallery_labels), 6, seed=6)
    got = check(q, query_labels, g, gallery_labels, chunk_size=20)
    assert got["recall@40"] <= 50 / 57  # absent-class queries always miss


def test_query_vs_gallery_ties(blocks):
    gl = ref.labels_with_sizes([2, 5, 1, 8, 3] * 5, seed=7)
    ql = ref.labels_with_sizes([4, 4, 4, 4, 4, 4], seed=8)
    check(ref.tie_heavy(len(ql), 3, seed=9), ql, ref.tie_heavy(len(gl), 3, seed=10), gl)


def test_hand_built_example():
    # 1-D embeddings (inner products are products): classes a = {0, 1, 2}, b = {3, 4}, c = {5}.
    x = torch.tensor([[1.0], [1.0], [-1.0], [1.0], [-1.0], [0.5]])
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    got = retrieval_metrics(x, labels, ks=(1, 2, 5))
    # Rankings (similarity desc, index asc), the query excluded:
    # q0 (+1): 1 3 5 | 2 4      -> first positive at 1, R=2, rel = [1, 0] -> AP 1/2, RP 1/2
    # q1 (+1): 0 3 5 | 2 4      -> 1, R=2, rel = [1, 0]  -> AP 1/2, RP 1/2
    # q2 (-1): 4 5 | 0 1 3 ... -> sims: 4:+1, 5:-0.5, 0,1,3:-1 -> order 4 5 0 1 3: first pos at 3,
    #          R=2, rel = [0, 0] -> AP 0, RP 0
    # q3 (+1): 0 1 5 | 2 4      -> first positive (4) at 5, R=1, rel = [0] -> 0
    # q4 (-1): 2 5 | 0 1 3      -> order 2 5 0 1 3: first positive (3) at 5, R=1 -> 0
    # q5 (0.5): 0 1 3 | 2 4     -> no positive (class of one): a miss, outside MAP@R
    assert got["recall@1"] == pytest.approx(2 / 6)
    assert got["recall@2"] == pytest.approx(2 / 6)
    assert got["recall@5"] == pytest.approx(5 / 6)
    assert got["map@r"] == pytest.approx((0.5 + 0.5 + 0 + 0 + 0) / 5)
    assert got["r_precision"] == pytest.approx((0.5 + 0.5) / 5)


def test_identical_for_any_chunk_size(blocks):
    labels = ref.labels_with_sizes([2, 3, 4, 5, 6, 12] * 12, seed=11)
    x = ref.unit(len(labels), 24, seed=11)
    runs = [retrieval_metrics(x, labels, ks=KS, chunk_size=c) for c in (1, 100, 4096)]
    assert all(r == runs[0] for r in runs)


def test_no_query_has_a_positive():
    x = ref.unit(6, 4)
    got = retrieval_metrics(x, torch.arange(6), ks=(1,))
    assert got["recall@1"] == 0 and math.isnan(got["map@r"]) and math.isnan(got["r_precision"])


def test_options_select_keys():
    x, labels = ref.unit(20, 4), ref.labels_with_sizes([4] * 5)
    got = retrieval_metrics(x, labels, ks=(4, 1), map_at_r=False, r_precision=False)
    assert list(got) == ["recall@1", "recall@4"]
    assert list(retrieval_metrics(x, labels, ks=())) == ["map@r", "r_precision"]


def test_input_checks():
    x, labels = ref.unit(10, 4), ref.labels_with_sizes([5, 5])
    with pytest.raises(ConfigError, match=r"\['torch'\]"):
        retrieval_metrics(x, labels, backend="scann")
    with pytest.raises(ConfigError, match=">= 1"):
        retrieval_metrics(x, labels, ks=(0, 1))
    with pytest.raises(ValueError, match="shape"):
        retrieval_metrics(x, labels[:9])
    with pytest.raises(ValueError, match="together"):
        retrieval_metrics(x, labels, x)


@pytest.mark.parametrize("gallery", [False, True])
def test_recall_k_beyond_the_references_is_a_clear_error(gallery):
    """Recall@K with K above the references a query can retrieve would be 1.0 by construction."""
    x, labels = ref.unit(10, 4), ref.labels_with_sizes([5, 5])
    args = (x[:4], labels[:4], x[4:], labels[4:]) if gallery else (x, labels)
    available = 6 if gallery else 9
    assert f"recall@{available}" in retrieval_metrics(*args, ks=(1, available))
    with pytest.raises(ConfigError, match=f"recall@{available + 1}.*{available} references"):
        retrieval_metrics(*args, ks=(1, available + 1))
    with pytest.raises(ConfigError, match=f"recall@{available + 1}"):
        check_ks((1, available + 1), available)


def test_agrees_with_pytorch_metric_learning():
    pml = pytest.importorskip("pytorch_metric_learning.utils.accuracy_calculator")
    labels = ref.labels_with_sizes([2, 3, 5, 8, 12] * 40, seed=13)  # no singletons: PML drops those
    x = ref.unit(len(labels), 32, seed=13)
    calc = pml.AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"), k="max_bin_count"
    )
    want = calc.get_accuracy(x, labels)
    got = retrieval_metrics(x, labels, ks=(1,))
    assert got["recall@1"] == pytest.approx(want["precision_at_1"], abs=1e-6)
    assert got["r_precision"] == pytest.approx(want["r_precision"], abs=1e-6)
    assert got["map@r"] == pytest.approx(want["mean_average_precision_at_r"], abs=1e-6)


def test_nmi_matches_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    gen = torch.Generator().manual_seed(0)
    for n_true, n_pred in [(5, 5), (3, 8), (10, 1), (1, 1)]:
        a = torch.randint(0, n_true, (300,), generator=gen) * 7 - 3  # arbitrary label values
        b = torch.randint(0, n_pred, (300,), generator=gen)
        assert nmi(a, b) == pytest.approx(sklearn_metrics.normalized_mutual_info_score(a, b), abs=1e-10)
    assert nmi(a, a) == pytest.approx(1.0)


def test_kmeans_finds_separated_clusters():
    centres = torch.eye(6)
    labels = ref.labels_with_sizes([30] * 6, seed=14)
    x = torch.nn.functional.normalize(centres[labels] + 0.05 * ref.unit(len(labels), 6, seed=15), dim=1)
    assert nmi(labels, kmeans(x, 6, seed=1, chunk_size=17)) == pytest.approx(1.0)
    got = retrieval_metrics(x, labels, ks=(1,), nmi=True)
    assert 0.5 < got["nmi"] <= 1.0 and got["recall@1"] == 1.0
