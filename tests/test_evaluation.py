"""One Evaluation per evaluation: gathered rows in dataset order, one ranking pass for metrics,
triplet points and neighbours, non-finite embeddings named or dropped."""
import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from hardneg.analysis.collapse import collapse_stats
from hardneg.errors import ConfigError
from hardneg.evaluation import EmbeddingBuffer, NonFiniteEmbeddingsError, evaluate_embeddings
from hardneg.metrics import retrieval_metrics
from tests.metrics import reference as ref

KS = (1, 2, 4)


def data(n=60, dim=8, seed=0):
    labels = ref.labels_with_sizes([1, 2, 3, 4, 5, 6, 7, 8, 9, 15], seed=seed)[:n]
    return ref.unit(len(labels), dim, seed=seed), labels


def test_buffer_drops_padding_duplicates_and_sorts_by_dataset_index():
    x, labels = data()
    buffer = EmbeddingBuffer()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
    for part in order.split(7):
        buffer.add(x[part], labels[part], part)
    buffer.add(x[order[:3]], labels[order[:3]], order[:3])  # what DistributedSampler's padding adds
    emb, lab, idx = buffer.gather()
    assert torch.equal(idx, torch.arange(len(x))) and torch.equal(emb, x) and torch.equal(lab, labels)


@pytest.mark.parametrize("gallery", [False, True])
def test_metrics_points_and_neighbours_come_from_one_ranking(gallery):
    x, labels = data()
    is_query = (torch.arange(len(x)) % 3 == 0) if gallery else None
    ev = evaluate_embeddings(x, labels, is_query=is_query, ks=KS, epoch=3)
    if gallery:
        want = ref.metrics(x[is_query], labels[is_query], x[~is_query], labels[~is_query], ks=KS)
    else:
        want = ref.metrics(x, labels, ks=KS)
    assert ev.metrics.keys() == want.keys() and ev.epoch == 3
    for key in want:
        assert ev.metrics[key] == pytest.approx(want[key], abs=1e-12), key
    assert ev.collapse == collapse_stats(x)
    # Triplet points: brute-force best positive / best negative of every query with both.
    q_rows, r_rows = ev.query_rows, ev.reference_rows
    points, correct = ev.triplet_points()
    want_points = []
    for i in q_rows.tolist():
        sims = {j: float(x[i] @ x[j]) for j in r_rows.tolist() if j != i}
        pos = [s for j, s in sims.items() if labels[j] == labels[i]]
        neg = [s for j, s in sims.items() if labels[j] != labels[i]]
        if pos and neg:
            want_points.append((max(pos), max(neg)))
    torch.testing.assert_close(points, torch.tensor(want_points), atol=1e-6, rtol=0)
    assert torch.equal(correct, points[:, 0] > points[:, 1])
    # Neighbours: rows into the evaluation, nearest first, never the query itself.
    rows, same = ev.neighbours(q_rows[:5], 4)
    for query, found in zip(q_rows[:5].tolist(), rows.tolist()):
        sims = sorted((-float(x[query] @ x[j]), j) for j in r_rows.tolist() if j != query)
        assert found == [j for _, j in sims[:4]]
    assert torch.equal(same, labels[rows] == labels[q_rows[:5]][:, None])


def test_equals_retrieval_metrics_and_metrics_do_not_depend_on_neighbours_kept():
    x, labels = data(seed=2)
    want = retrieval_metrics(x, labels, ks=KS)
    for neighbours in (0, 10, 50):
        assert evaluate_embeddings(x, labels, ks=KS, neighbours=neighbours).metrics == want


def test_nonfinite_embeddings_are_named_by_dataset_index():
    x, labels = data()
    x[[5, 17]] = float("nan")
    x[30, 0] = float("inf")
    indices = torch.arange(len(x)) + 1000
    with pytest.raises(NonFiniteEmbeddingsError, match=r"3 of 60 test embeddings .*1005, 1017, 1030.*eval.nonfinite=drop"):
        evaluate_embeddings(x, labels, indices, ks=KS)


def test_nonfinite_drop_evaluates_the_rest_and_counts_them():
    x, labels = data()
    bad = torch.zeros(len(x), dtype=torch.bool)
    bad[[5, 17]] = True
    poisoned = x.clone()
    poisoned[bad] = float("nan")
    ev = evaluate_embeddings(poisoned, labels, ks=KS, nonfinite="drop")
    clean = evaluate_embeddings(x[~bad], labels[~bad], ks=KS)
    assert ev.dropped.tolist() == [5, 17] and ev.metrics.pop("nonfinite_dropped") == 2
    assert ev.metrics == clean.metrics and len(ev.embeddings) == len(x) - 2
    with pytest.raises(ConfigError, match="eval.nonfinite='ignore'"):
        evaluate_embeddings(x, labels, ks=KS, nonfinite="ignore")


def test_recall_k_beyond_the_test_set_stops_with_a_message():
    x, labels = data(n=20)
    with pytest.raises(ConfigError, match="recall@1000 .* 19 references"):
        evaluate_embeddings(x, labels, ks=(1, 1000))


class Scale(torch.nn.Module):
    """A stand-in net: the inputs are the embeddings (a NaN input gives a NaN embedding)."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(()))

    def forward(self, x):
        return x * self.weight


def test_a_nan_embedding_in_validation_stops_cleanly():
    from hardneg.criterion import Criterion
    from hardneg.data.base import TensorRetrievalDataset
    from hardneg.losses import SCTLoss
    from hardneg.mining import TripletMiner
    from hardneg.module import MetricLearningModule

    x, labels = data()
    x[7] = float("nan")
    module = MetricLearningModule(Scale(), Criterion(SCTLoss(), TripletMiner()),
                                  optimizer=lambda p: torch.optim.SGD(p, lr=0.1), recall_ks=KS)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    loader = DataLoader(TensorRetrievalDataset(x, labels), batch_size=16)
    with pytest.raises(NonFiniteEmbeddingsError, match="1 of 60 .*indices 7"):
        trainer.validate(module, loader, verbose=False)
    module.eval_nonfinite = "drop"
    trainer.validate(module, loader, verbose=False)
    assert module.last_evaluation.dropped.tolist() == [7] and module.eval_history[-1][1]["nonfinite_dropped"] == 1
