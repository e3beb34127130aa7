import json
import math

import pytest
import torch
import torch.multiprocessing as mp

from hardneg.metrics import RetrievalMetric, retrieval_metrics

from . import reference as ref

KS = (1, 2, 4, 8)


def dataset(seed=0):
    """101 items (odd: DistributedSampler pads), tie-heavy embeddings, classes of 1..12 items,
    items 60.. are gallery, the rest queries."""
    labels = ref.labels_with_sizes([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 23], seed=seed)
    x = ref.tie_heavy(len(labels), 3, seed=seed)
    is_query = torch.arange(len(labels)) < 60
    return x, labels, is_query


def shard(n, rank, world):
    """DistributedSampler(shuffle=False) indices: strided, padded by repeating the first items."""
    total = math.ceil(n / world) * world
    indices = list(range(n)) + list(range(n))[: total - n]
    return torch.tensor(indices[rank:total:world])


def feed(metric, x, labels, indices, is_query=None, batch=8):
    for a in range(0, len(indices), batch):
        i = indices[a : a + batch]
        metric.update(x[i], labels[i], i, None if is_query is None else is_query[i])


def expected(query_gallery):
    x, labels, q = dataset()
    if query_gallery:
        return retrieval_metrics(x[q], labels[q], x[~q], labels[~q], ks=KS)
    return retrieval_metrics(x, labels, ks=KS)


@pytest.mark.parametrize("query_gallery", [False, True])
def test_duplicates_and_order_do_not_matter(query_gallery):
    x, labels, q = dataset()
    metric = RetrievalMetric(ks=KS, query_gallery=query_gallery)
    # Shuffled, with repeats (as padding does): the result is that of the dataset in index order.
    order = torch.cat([torch.randperm(len(labels), generator=torch.Generator().manual_seed(1)), torch.arange(7)])
    feed(metric, x, labels, order, q if query_gallery else None)
    assert metric.compute() == expected(query_gallery)
    metric.reset()
    feed(metric, x, labels, torch.arange(len(labels)), q if query_gallery else None)
    assert metric.compute() == expected(query_gallery)


def test_is_query_must_match_the_protocol():
    x, labels, q = dataset()
    with pytest.raises(ValueError, match="is_query"):
        RetrievalMetric(query_gallery=True).update(x, labels, torch.arange(len(x)))
    with pytest.raises(ValueError, match="is_query"):
        RetrievalMetric().update(x, labels, torch.arange(len(x)), q)
    with pytest.raises(ValueError, match="'torch', 'faiss'"):
        RetrievalMetric(backend="hnsw")


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_compute_before_update_is_a_clear_error():
    with pytest.raises(ValueError, match="before any update"):
        RetrievalMetric().compute()


def _ddp_worker(rank, world, init_file, out_dir):
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        x, labels, q = dataset()
        results = {}
        for query_gallery in (False, True):
            metric = RetrievalMetric(ks=KS, query_gallery=query_gallery)
            feed(metric, x, labels, shard(len(labels), rank, world), q if query_gallery else None, batch=5)
            results[str(query_gallery)] = metric.compute()
        with open(f"{out_dir}/rank{rank}.json", "w") as f:
            json.dump(results, f)
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.ddp
def test_ddp_two_ranks_equal_one_process(tmp_path):
    world = 2
    mp.spawn(_ddp_worker, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world)
    for rank in range(world):
        results = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for query_gallery in (False, True):
            got, want = results[str(query_gallery)], expected(query_gallery)
            assert got.keys() == want.keys()
            for key in want:  # JSON round-trips floats exactly; NaN compares unequal
                assert got[key] == want[key] or (math.isnan(got[key]) and math.isnan(want[key])), key
