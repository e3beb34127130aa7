"""SCT loss: the hard rules, the normalisations, ties, and the paper's method by hand."""
from __future__ import annotations

import math

import pytest
import torch

from hardneg.criterion import Criterion
from hardneg.losses import SCTLoss, sct_loss
from hardneg.mining import TripletMiner

from .handbuilt import batch


def sp(x):
    return math.log1p(math.exp(x))  # NCA = softplus((S_an - S_ap) / tau)


S_AP = torch.tensor([0.9, 0.6, 0.5, 0.3], dtype=torch.float64)
S_AN = torch.tensor([0.85, 0.7, 0.1, 0.2], dtype=torch.float64)
# triplet:             0: S_an > .8 but < S_ap   1: S_an > S_ap   2, 3: easy


def test_official_rule_by_hand():
    # hard = S_an > S_ap or S_an > .8: triplets 0 and 1 -> lam * S_an; 2, 3 -> NCA
    loss, hard = sct_loss(S_AP, S_AN, lam=1.0, tau=0.1, hard_rule="official", threshold=0.8)
    assert hard.tolist() == [True, True, False, False]
    assert loss.item() == pytest.approx((0.85 + 0.7 + sp(-4.0) + sp(-1.0)) / 4, abs=1e-12)


def test_paper_rule_by_hand():
    # hard = S_an > S_ap: only triplet 1; triplet 0 is NCA with (S_an - S_ap)/tau = -.5
    loss, hard = sct_loss(S_AP, S_AN, lam=0.5, hard_rule="paper")
    assert hard.tolist() == [False, True, False, False]
    assert loss.item() == pytest.approx((sp(-0.5) + 0.5 * 0.7 + sp(-4.0) + sp(-1.0)) / 4, abs=1e-12)


def test_earlier_rule_with_separate_means_by_hand():
    # hard = S_an > S_ap and S_an > .5: triplet 1 only; loss = mean_easy NCA + lam * mean_hard S_an
    loss, hard = sct_loss(S_AP, S_AN, hard_rule="earlier", threshold=0.5, reduction="separate")
    assert hard.tolist() == [False, True, False, False]
    assert loss.item() == pytest.approx((sp(-0.5) + sp(-4.0) + sp(-1.0)) / 3 + 0.7, abs=1e-12)


def test_exact_ties_are_neither_easy_nor_hard_in_the_official_code():
    # S_an == S_ap (and <= .8) or S_an == .8 (< S_ap): the official code counts them nowhere.
    s_ap = torch.tensor([0.5, 0.9, 0.6], dtype=torch.float64)
    s_an = torch.tensor([0.5, 0.8, 0.2], dtype=torch.float64)
    loss, _ = sct_loss(s_ap, s_an)
    assert loss.item() == pytest.approx(sp(-4.0), abs=1e-12)  # only the third, divided by 1
    loss, _ = sct_loss(s_ap[:2], s_an[:2])
    assert loss.item() == 0.0  # N_easy + N_hard = 0 -> 0, like the official N = 1
    # the paper's rule has no gap: a tie is not hard, so it is an NCA triplet (log 2)
    loss, _ = sct_loss(s_ap[:1], s_an[:1], hard_rule="paper")
    assert loss.item() == pytest.approx(math.log(2), abs=1e-12)


def test_hard_triplets_push_only_the_negative():
    # For a hard triplet L = lam * S_an: no gradient on S_ap at all.
    s_ap = torch.tensor([0.3], dtype=torch.float64, requires_grad=True)
    s_an = torch.tensor([0.6], dtype=torch.float64, requires_grad=True)
    loss, _ = sct_loss(s_ap, s_an, lam=2.0)
    loss.backward()
    assert s_ap.grad.item() == 0.0 and s_an.grad.item() == 2.0


def test_sct_on_the_hand_built_batch():
    # easy/hardest triplets (0,1,2) (1,0,3) (2,3,0) (3,2,1) are all hard (S_an > S_ap), so
    # L = (S_02 + S_13 + S_20 + S_31) / 4 = (.8 + .64 + .8 + .64) / 4 = .72
    #   = (e0.e2 + e1.e3) / 2  ->  dL/de0 = e2/2, dL/de1 = e3/2, dL/de2 = e0/2, dL/de3 = e1/2
    e, y = batch()
    loss, stats = Criterion(SCTLoss(), TripletMiner("easy", "hardest"))(e, y)
    assert loss.item() == pytest.approx(0.72, abs=1e-12)
    assert stats["sct_hard_ratio"].item() == 1.0 and stats["hn_ratio"].item() == 1.0
    loss.backward()
    expected = torch.tensor([[0.4, 0, 0.3], [0, 0.4, 0.3], [0.5, 0, 0], [0.3, 0.4, 0]], dtype=torch.float64)
    assert torch.allclose(e.grad, expected, atol=1e-12, rtol=0)


def test_sct_with_semihard_mining_is_plain_nca():
    # semi-hard triplets have S_an < S_ap <= .8: all easy -> the shn value
    e, y = batch()
    loss, _ = Criterion(SCTLoss(), TripletMiner("easy", "semihard"))(e, y)
    assert loss.item() == pytest.approx((sp(-6.0) + sp(-1.2) + sp(-3.6)) / 3, abs=1e-12)


@pytest.mark.parametrize("kwargs,key", [({"hard_rule": "strict"}, "loss.hard_rule"),
                                        ({"reduction": "sum"}, "loss.reduction"), ({"tau": -1}, "loss.tau")])
def test_invalid_options_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        SCTLoss(**kwargs)
