"""Gradient fields over triplet space: the signs the paper derives, through the real losses."""
import numpy as np
import pytest
import torch

from hardneg.analysis.gradient_field import (
    S_PN_MODES,
    gradient_field,
    main,
    resolve_s_pn,
    similarity_steps,
    triplet_vectors,
)
from hardneg.losses import ContrastiveLoss, NCALoss, SCTLoss
from hardneg.losses.sct import hard_triplets

S_AP = np.array([-0.5, -0.2, 0.0, 0.3, 0.5, 0.7, 0.85, 0.9])


def distance_to_one_one(s_ap, s_an):
    return np.hypot(1 - s_ap, 1 - s_an)


@pytest.mark.parametrize("s_pn", [*S_PN_MODES, 0.1])
def test_constructed_vectors_have_the_requested_similarities(s_pn):
    s_ap, s_an = np.array([0.3, -0.6, 0.9]), np.array([0.5, 0.2, 0.95])
    pn = np.array([resolve_s_pn(a, n, s_pn) for a, n in zip(s_ap, s_an)])
    vectors, feasible = triplet_vectors(s_ap, s_an, pn)
    gram = vectors @ vectors.transpose(1, 2)
    for i in np.flatnonzero(feasible.numpy()):
        torch.testing.assert_close(gram[i], torch.tensor([[1, s_ap[i], s_an[i]], [s_ap[i], 1, pn[i]],
                                                          [s_an[i], pn[i], 1]], dtype=torch.float64), atol=1e-6, rtol=0)


def test_impossible_s_pn_leaves_the_point_empty():
    d_ap, d_an = similarity_steps(NCALoss(), np.array([0.9]), np.array([0.9]), s_pn=-0.9)
    assert np.isnan(d_ap[0]) and np.isnan(d_an[0])


@pytest.mark.parametrize("s_pn", S_PN_MODES)
@pytest.mark.parametrize("s_an", [0.95, 0.99])
def test_nca_with_a_very_hard_negative_drifts_toward_one_one(s_an, s_pn):
    """The paper's failure: near S_an = 1 the step raises S_ap and brings the triplet closer to (1, 1)."""
    an = np.full_like(S_AP, s_an)
    d_ap, d_an = similarity_steps(NCALoss(), S_AP, an, s_pn)
    assert (d_ap > 0).all()
    assert (distance_to_one_one(S_AP + d_ap, an + d_an) < distance_to_one_one(S_AP, an)).all()


def test_nca_drags_the_anchor_through_a_nearly_identical_negative():
    """With p and n on the same side of a (``near``), S_an rises too: anchor, positive and negative
    are pulled together, the drift to collapse."""
    d_ap, d_an = similarity_steps(NCALoss(), S_AP, np.full_like(S_AP, 0.99), "near")
    assert (d_ap > 0).all() and (d_an > 0).all()


@pytest.mark.parametrize("s_pn", S_PN_MODES)
def test_sct_pushes_the_negative_away_on_hard_triplets(s_pn):
    loss = SCTLoss()
    field = gradient_field(loss, grid=16, s_pn=s_pn)
    s_ap, s_an = torch.from_numpy(field["s_ap"]), torch.from_numpy(field["s_an"])
    hard = hard_triplets(s_ap, s_an, loss.hard_rule, loss.threshold).numpy()
    assert hard.sum() > 50
    assert (field["d_an"][hard] < 0).all()
    if s_pn == "far":
        return  # p opposite n: moving a away from n moves it toward p, S_ap rises, S_an still falls
    near_one = hard & (field["s_an"] > 0.9)  # no drift to (1, 1) where NCA has it
    before = distance_to_one_one(field["s_ap"], field["s_an"])[near_one]
    after = distance_to_one_one(field["s_ap"] + field["d_ap"], field["s_an"] + field["d_an"])[near_one]
    assert (after >= before - 1e-9).all()


def test_sct_equals_nca_on_easy_triplets():
    s_ap, s_an = np.array([0.5, 0.7, 0.2]), np.array([0.1, 0.3, -0.4])  # S_an < S_ap and < 0.8
    np.testing.assert_allclose(similarity_steps(SCTLoss(), s_ap, s_an), similarity_steps(NCALoss(), s_ap, s_an))


def test_pair_losses_have_no_triplet_space_field():
    with pytest.raises(ValueError, match="not a triplet loss"):
        gradient_field(ContrastiveLoss())


def test_cli_writes_a_png_for_a_configured_loss(tmp_path):
    out = main(["loss=sct", "loss.lam=0.5", "s_pn=orthogonal", "grid=8", f"out={tmp_path / 'field.png'}"])
    assert out.stat().st_size > 10_000
    with pytest.raises(SystemExit, match="unknown option"):
        main(["loss=nca", "bogus=1"])
    with pytest.raises(SystemExit, match="s_pn"):
        main(["s_pn=sideways"])
