"""XBM around the criterion: mining against batch + bank equals brute force, gradients reach
only the batch, the start step, the stats, the checkpoint, and the losses it refuses."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from bruteforce import multi_similarity, negative_options, positive_choices, triplet_loss

from hardneg.criterion import Criterion
from hardneg.errors import ConfigError
from hardneg.losses import MultiSimilarityLoss, NCALoss, ProxyAnchorLoss
from hardneg.memory import CrossBatchMemory
from hardneg.mining import TripletMiner
from hardneg.models import EmbeddingNet
from hardneg.module import MetricLearningModule

DUPLICATE = 0.9999
DIM = 4


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def batch_and_bank(seed: int = 0):
    """8 batch samples (4 classes x 2, dataset indices 100..107) and 12 earlier ones for a
    10-slot bank (so it has wrapped), among them: earlier embeddings of batch images 100 and
    103, an exact copy of batch sample 2 (same class: a duplicate, never a positive) and of
    batch sample 5 under another class (a negative at similarity 1)."""
    g = torch.Generator().manual_seed(seed)
    emb = F.normalize(torch.randn(8, DIM, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    labels = torch.arange(4).repeat_interleave(2)
    indices = torch.arange(100, 108)
    past = F.normalize(torch.randn(12, DIM, generator=g, dtype=torch.float64), dim=1)
    past_labels = torch.tensor([5, 0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4])
    past_indices = torch.arange(12)
    past[5] = F.normalize(emb[0].detach() + 0.3 * past[5], dim=0)
    past_labels[5], past_indices[5] = 0, 100  # image 100 seen before
    past[8], past_labels[8], past_indices[8] = emb[3].detach() * 0.7 + past[8] * 0.3, 1, 103
    past[8] = F.normalize(past[8], dim=0)
    past[9], past_labels[9] = emb[2].detach(), 1  # a duplicate of sample 2, same class
    past[10], past_labels[10] = emb[5].detach(), 4  # sample 5's image under another class
    return emb, labels, indices, past, past_labels, past_indices


class Recorder:
    """Wraps a miner and keeps the triplets it returned."""

    def __init__(self, inner):
        self.inner, self.triplets = inner, None

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, *args, **kwargs):
        self.triplets = self.inner(*args, **kwargs)
        return self.triplets


def expected_triplets(sim, labels, ref_labels, ref_indices, indices, offset, use, exclude_same_image, pos, neg):
    """The definition, by loops: {anchor: [(p, n), ...]}."""
    out = {}
    for i in range(len(sim)):
        def ignored(j, i=i):
            if j < offset:
                return False
            return (use == "negatives" and ref_labels[j] == labels[i]) or (
                exclude_same_image and ref_indices[j] == indices[i])
        positives = [j for j in range(len(sim[i])) if ref_labels[j] == labels[i] and j != i
                     and sim[i][j] < DUPLICATE and not ignored(j)]
        negatives = [k for k in range(len(sim[i])) if ref_labels[k] != labels[i]]
        chosen = []
        for p in positive_choices(sim[i], positives, pos):
            options = negative_options(sim[i], negatives, p, neg)
            if options:
                chosen.append((p, options[0]))
        out[i] = sorted(chosen)
    return out


@pytest.mark.parametrize("use", ["both", "negatives"])
@pytest.mark.parametrize("exclude_same_image", [True, False])
@pytest.mark.parametrize("pos,neg", [("easy", "hardest"), ("easy", "semihard"), ("hard", "easy"),
                                     ("all", "hardest"), ("all", "semihard")])
def test_mining_against_batch_and_bank_equals_brute_force(use, exclude_same_image, pos, neg):
    emb, labels, indices, past, past_labels, past_indices = batch_and_bank()
    memory = CrossBatchMemory(size=10, dim=DIM, use=use, exclude_same_image=exclude_same_image).double()
    memory.bank.enqueue(past, past_labels, past_indices)
    bank_emb, bank_labels, bank_indices = memory.bank.get()
    recorder = Recorder(TripletMiner(pos, neg))
    criterion = Criterion(NCALoss(), recorder)
    loss, stats = memory(criterion, emb, labels, indices, emb, labels, torch.arange(8), step=0)
    assert criterion.miner is recorder  # the bank-aware wrapper is gone after the call

    refs = torch.cat([emb.detach(), bank_emb])
    ref_labels, ref_indices = torch.cat([labels, bank_labels]), torch.cat([indices, bank_indices])
    sim = (emb.detach() @ refs.T).tolist()
    want = expected_triplets(sim, labels.tolist(), ref_labels.tolist(), ref_indices.tolist(), indices.tolist(), 8,
                             use, exclude_same_image, pos, neg)
    t = recorder.triplets
    got = {}
    for a, p, n in zip(t.anchor.tolist(), t.positive.tolist(), t.negative.tolist()):
        got.setdefault(a, []).append((p, n))
    assert {a: sorted(v) for a, v in got.items()} == {a: v for a, v in want.items() if v}
    # The loss reads the restored, true similarities: the brute-force NCA over the same triplets.
    triplets = [(a, p, n) for a, v in want.items() for p, n in v]
    loss.backward()
    leaf = emb.detach().clone().requires_grad_()
    reference = triplet_loss("nca", {}, leaf, torch.cat([leaf, bank_emb]), torch.tensor(sim), triplets)
    reference.backward()
    assert loss.item() == pytest.approx(reference.item(), abs=1e-12)
    torch.testing.assert_close(emb.grad, leaf.grad, atol=1e-12, rtol=0)  # the bank is a constant
    # hn_ratio for in-batch and bank negatives apart
    hard = {"batch": [], "bank": []}
    for a, p, n in triplets:
        hard["bank" if n >= 8 else "batch"].append(sim[a][n] > sim[a][p])
    for where, flags in hard.items():
        if flags:
            assert stats[f"hn_ratio_{where}"].item() == pytest.approx(sum(flags) / len(flags))
        else:
            assert f"hn_ratio_{where}" not in stats
    assert stats["bank_negative"].tolist() == [n >= 8 for n in t.negative.tolist()]


def test_some_bank_entries_are_really_ignored_and_some_negatives_come_from_the_bank():
    """Guards the scenario above against testing nothing: the rules change the mined triplets."""
    emb, labels, indices, past, past_labels, past_indices = batch_and_bank()
    mined = {}
    for use, exclude in [("both", False), ("both", True), ("negatives", True)]:
        memory = CrossBatchMemory(size=10, dim=DIM, use=use, exclude_same_image=exclude).double()
        memory.bank.enqueue(past, past_labels, past_indices)
        recorder = Recorder(TripletMiner("easy", "hardest"))
        _, stats = memory(Criterion(NCALoss(), recorder), emb, labels, indices, emb, labels, torch.arange(8))
        mined[use, exclude] = recorder.triplets.positive.tolist()
        assert 0 < stats["bank_negative_share"] < 1
    assert any(p >= 8 for p in mined["both", False])  # bank positives exist
    assert mined["both", False] != mined["both", True]  # image 100's earlier embedding was its positive
    assert all(p < 8 for p in mined["negatives", True])


def test_before_start_step_the_bank_is_neither_read_nor_filled():
    emb, labels, indices, *_ = batch_and_bank()
    memory = CrossBatchMemory(size=10, dim=DIM, start_step=2).double()
    criterion = Criterion(NCALoss(), TripletMiner())
    plain, _ = criterion(emb, labels)
    for step in range(2):
        loss, stats = memory(criterion, emb, labels, indices, emb, labels, torch.arange(8), step=step)
        assert loss.item() == plain.item() and len(memory.bank) == 0 and stats["bank_size"] == 0
    memory(criterion, emb, labels, indices, emb, labels, torch.arange(8), step=2)  # empty bank: read nothing
    assert memory.bank.get()[2].tolist() == indices.tolist()
    loss, stats = memory(criterion, emb, labels, indices, emb, labels, torch.arange(8), step=3)
    assert "hn_ratio_batch" in stats and stats["bank_size"] == 8
    assert len(memory.bank) == 10  # 16 enqueued, 10 slots


def test_a_nonfinite_batch_is_not_remembered():
    emb, labels, indices, *_ = batch_and_bank()
    memory = CrossBatchMemory(size=10, dim=DIM).double()
    bad = emb.detach().clone()
    bad[3] = float("nan")
    loss, _ = memory(Criterion(NCALoss()), bad, labels, indices, bad, labels, torch.arange(8))
    assert not torch.isfinite(loss) and len(memory.bank) == 0


def test_pair_loss_sees_the_bank_as_references():
    emb, labels, indices, past, past_labels, _ = batch_and_bank()
    memory = CrossBatchMemory(size=10, dim=DIM, exclude_same_image=False).double()
    memory.bank.enqueue(past, past_labels)
    bank_emb, bank_labels, _ = memory.bank.get()  # before the call enqueues the batch
    loss, _ = memory(Criterion(MultiSimilarityLoss()), emb, labels, indices, emb, labels, torch.arange(8))
    reference = multi_similarity(emb, labels, torch.cat([emb, bank_emb]), torch.cat([labels, bank_labels]),
                                 torch.arange(8))
    assert loss.item() == pytest.approx(reference.item(), abs=1e-10)


def test_losses_it_cannot_serve_are_refused_by_name():
    with pytest.raises(ConfigError, match="proxies"):
        CrossBatchMemory(size=4, dim=DIM).check_loss(ProxyAnchorLoss(num_classes=3, dim=DIM))
    with pytest.raises(ConfigError, match="use=negatives needs a triplet loss"):
        CrossBatchMemory(size=4, dim=DIM, use="negatives").check_loss(MultiSimilarityLoss())
    with pytest.raises(ConfigError, match="memory.use"):
        CrossBatchMemory(size=4, dim=DIM, use="positives")


def test_the_bank_is_in_the_module_checkpoint(tmp_path):
    def module():
        torch.manual_seed(0)
        return MetricLearningModule(EmbeddingNet("test_efficientnet", dim=DIM, pretrained=False),
                                    Criterion(NCALoss()), optimizer=torch.optim.SGD,
                                    memory=CrossBatchMemory(size=6, dim=DIM))
    saved = module()
    saved.memory.bank.enqueue(torch.randn(9, DIM), torch.arange(9) % 3, torch.arange(9))
    torch.save(saved.state_dict(), tmp_path / "ckpt.pt")
    restored = module()
    restored.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True))
    for a, b in zip(saved.memory.bank.get(), restored.memory.bank.get()):
        assert torch.equal(a, b)
    assert int(restored.memory.bank.total) == 9


@pytest.mark.parametrize("pos,neg", [("random", "random"), ("random", "hardest"), ("easy", "random")])
@pytest.mark.parametrize("use", ["both", "negatives"])
def test_random_strategies_draw_only_allowed_batch_and_bank_entries(pos, neg, use):
    emb, labels, indices, past, past_labels, past_indices = batch_and_bank()
    memory = CrossBatchMemory(size=10, dim=DIM, use=use).double()
    memory.bank.enqueue(past, past_labels, past_indices)
    bank_emb, bank_labels, bank_indices = memory.bank.get()
    refs = torch.cat([emb.detach(), bank_emb])
    ref_labels, ref_indices = torch.cat([labels, bank_labels]), torch.cat([indices, bank_indices])
    sim = (emb.detach() @ refs.T).tolist()
    for seed in range(5):
        torch.manual_seed(seed)
        recorder = Recorder(TripletMiner(pos, neg))
        m = CrossBatchMemory(size=10, dim=DIM, use=use).double()
        m.bank.load_state_dict(memory.bank.state_dict())
        m(Criterion(NCALoss(), recorder), emb, labels, indices, emb, labels, torch.arange(8))
        t = recorder.triplets
        assert len(t) > 0
        for a, p, n in zip(t.anchor.tolist(), t.positive.tolist(), t.negative.tolist()):
            assert ref_labels[p] == labels[a] and p != a and sim[a][p] < DUPLICATE
            assert not (p >= 8 and (use == "negatives" or ref_indices[p] == indices[a])), (a, p)
            assert ref_labels[n] != labels[a]
