"""NCA triplet loss; the paper's hn and shn on a hand-built batch, computed by hand."""
from __future__ import annotations

import math

import pytest
import torch

from hardneg.criterion import Criterion
from hardneg.losses import NCALoss, nca_triplet
from hardneg.mining import TripletMiner

from .handbuilt import batch


def test_nca_is_minus_log_softmax_of_the_positive():
    s_ap = torch.tensor([0.9, 0.1, -0.5, 0.99], dtype=torch.float64)
    s_an = torch.tensor([0.2, 0.6, -0.4, -0.99], dtype=torch.float64)
    for tau in (0.1, 0.5):
        logits = torch.stack([s_ap, s_an], 1) / tau
        expected = -torch.log_softmax(logits, dim=1)[:, 0]
        assert torch.allclose(nca_triplet(s_ap, s_an, tau), expected, atol=1e-12, rtol=0)


def test_nca_stays_finite_for_extreme_gaps():
    s_ap, s_an = torch.tensor([-1.0, 1.0]), torch.tensor([1.0, -1.0])
    out = nca_triplet(s_ap, s_an, tau=0.001)  # exp(2000) would overflow
    assert torch.isfinite(out).all() and out[0].item() == pytest.approx(2000.0)


def test_hn_by_hand():
    # easy positive / hardest negative: (S_ap, S_an) = (.6,.8) (.6,.64) (.36,.8) (.36,.64)
    # NCA = log(1 + exp((S_an - S_ap)/.1)) = log(1+e^2), log(1+e^.4), log(1+e^4.4), log(1+e^2.8)
    expected = (math.log1p(math.exp(2.0)) + math.log1p(math.exp(0.4))
                + math.log1p(math.exp(4.4)) + math.log1p(math.exp(2.8))) / 4
    e, y = batch()
    loss, stats = Criterion(NCALoss(tau=0.1), TripletMiner("easy", "hardest"))(e, y)
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    assert stats["hn_ratio"].item() == 1.0 and stats["valid_triplets"].item() == 4
    assert stats["s_ap"].item() == pytest.approx((0.6 + 0.6 + 0.36 + 0.36) / 4)
    assert stats["s_an"].item() == pytest.approx((0.8 + 0.64 + 0.8 + 0.64) / 4)


def test_shn_by_hand():
    # easy positive / semi-hard negative: anchor 2 has no negative below .36 -> 3 triplets
    # (.6, 0) (.6, .48) (.36, 0): NCA = log(1+e^-6), log(1+e^-1.2), log(1+e^-3.6)
    expected = (math.log1p(math.exp(-6.0)) + math.log1p(math.exp(-1.2)) + math.log1p(math.exp(-3.6))) / 3
    e, y = batch()
    loss, stats = Criterion(NCALoss(tau=0.1), TripletMiner("easy", "semihard"))(e, y)
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    assert stats["hn_ratio"].item() == 0.0 and stats["valid_triplets"].item() == 3


def test_hn_gradient_by_hand():
    # L = 1/4 sum_t softplus(z_t), z_t = (S_an - S_ap)/tau, so dL/dS_an = -dL/dS_ap = w_t = sigmoid(z_t)/tau/4.
    # Triplets (a, p, n) with z: t0 (0,1,2) z=2, t1 (1,0,3) z=.4, t2 (2,3,0) z=4.4, t3 (3,2,1) z=2.8.
    # d(e_a.e_x)/de_a = e_x and d(e_a.e_x)/de_x = e_a, so
    #   e1: positive in t0 (-w0 e0), anchor in t1 (w1 (e3 - e0)), negative in t3 (+w3 e3)
    #   e2: negative in t0 (+w0 e0), anchor in t2 (w2 (e0 - e3)), positive in t3 (-w3 e3)
    e, y = batch()
    loss, _ = Criterion(NCALoss(), TripletMiner("easy", "hardest"))(e, y)
    loss.backward()
    w0, w1, w2, w3 = (torch.sigmoid(torch.tensor([2.0, 0.4, 4.4, 2.8], dtype=torch.float64)) / 0.1 / 4).tolist()
    e0, e1, e2, e3 = e.detach()
    assert torch.allclose(e.grad[1], -w0 * e0 + w1 * (e3 - e0) + w3 * e3, atol=1e-12, rtol=0)
    assert torch.allclose(e.grad[2], w0 * e0 + w2 * (e0 - e3) - w3 * e3, atol=1e-12, rtol=0)


def test_tau_must_be_positive():
    with pytest.raises(ValueError, match="loss.tau"):
        NCALoss(tau=0.0)
