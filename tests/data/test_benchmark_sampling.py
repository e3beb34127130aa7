"""The benchmarks feed the class-balanced sampler: whole class groups per rank, never a singleton."""
from __future__ import annotations

import types
from collections import Counter

import pytest

from hardneg.data.cars import CarsDataModule
from hardneg.data.cub import CUBDataModule
from hardneg.data.hotels50k import Hotels50KDataModule
from hardneg.data.inshop import InShopDataModule
from hardneg.data.sop import SOPDataModule

CASES = {
    "cub": (CUBDataModule, "cub", "filled", 1),
    "cars": (CarsDataModule, "cars", "filled", 1),
    "sop": (SOPDataModule, "sop", "sampled", 5),
    "inshop": (InShopDataModule, "inshop", "sampled", 5),
    "hotels50k": (Hotels50KDataModule, "hotels", "sampled", 5),
}


def rank_batches(dm, world, epochs=1):
    """Per rank, the index batches of ``epochs`` epochs, as each rank's DataLoader yields them."""
    out = []
    for rank in range(world):
        dm.trainer = types.SimpleNamespace(world_size=world, global_rank=rank)
        sampler = dm.train_dataloader().batch_sampler
        out.append([])
        for epoch in range(epochs):
            sampler.set_epoch(epoch)
            out[-1] += list(sampler)
    return out


@pytest.mark.filterwarnings("ignore:Hotels-50K")
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("world", [1, 2])
def test_class_groups_per_rank(tmp_path, tiny_trees, name, world):
    cls, tree, sampler, repeat = CASES[name]
    getattr(tiny_trees, tree)(tmp_path)
    dm = cls(root=str(tmp_path), image_size=16, batch_size=4, samples_per_class=2, sampler=sampler, repeat=repeat)
    dm.setup()
    labels = dm.splits.train.labels
    singletons = {c for c, n in Counter(labels.tolist()).items() if n == 1}
    assert singletons, "every tiny tree has a one-image training class"
    per_rank = rank_batches(dm, world, epochs=3)
    assert len({len(b) for b in per_rank}) == 1 and len(per_rank[0]) > 0  # same number of steps
    for step in zip(*per_rank):
        assert all(len(b) == 4 // world for b in step)
        rank_classes = [Counter(labels[b].tolist()) for b in step]
        for counts in rank_classes:
            assert all(n % 2 == 0 for n in counts.values())  # whole groups of K=2: every anchor has a positive
            assert not singletons & counts.keys()  # a one-image class never trains
    images, label, index = next(iter(dm.train_dataloader()))
    assert images.shape == (4 // world, 3, 16, 16) and labels[index].tolist() == label.tolist()


# The bar: no sample twice in one global batch (sampled mode once broke it when a
# batch straddled two repeat rounds).
@pytest.mark.filterwarnings("ignore:Hotels-50K")
@pytest.mark.parametrize("name", [
    "cub", "cars",
    "sop",
    "inshop",
    "hotels50k",
])
def test_no_sample_twice_in_a_global_batch(tmp_path, tiny_trees, name):
    cls, tree, sampler, repeat = CASES[name]
    getattr(tiny_trees, tree)(tmp_path)
    dm = cls(root=str(tmp_path), image_size=16, batch_size=4, samples_per_class=2, sampler=sampler, repeat=repeat)
    for step in zip(*rank_batches(dm, 2, epochs=10)):
        flat = [i for b in step for i in b]
        assert len(flat) == len(set(flat)), step
