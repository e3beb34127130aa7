"""Criterion = miner + loss, against brute-force loops (float64, 1e-9), for every triplet loss x
every mining combination on every corner-case scenario; and the configs build working criteria."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from bruteforce import assert_close, check_mined, scenarios, triplet_loss

from hardneg.criterion import Criterion
from hardneg.losses import (
    ContrastiveLoss,
    MarginTripletLoss,
    MultiSimilarityLoss,
    NCALoss,
    ProxyAnchorLoss,
    SCTLoss,
)
from hardneg.mining import TripletMiner

POS = ["easy", "hard", "random", "all"]
NEG = ["hardest", "semihard", "easy", "random"]
TRIPLET_LOSSES = {
    "nca": ("nca", {}),
    "nca_tau0.5": ("nca", {"tau": 0.5}),
    "sct": ("sct", {}),
    "sct_paper": ("sct", {"hard_rule": "paper"}),
    "sct_earlier_separate": ("sct", {"hard_rule": "earlier", "threshold": 0.5, "reduction": "separate"}),
    "sct_official_separate_lam0.5": ("sct", {"reduction": "separate", "lam": 0.5}),
    "margin_euclidean": ("margin", {}),
    "margin_cosine_nonzero": ("margin", {"distance": "cosine", "reduction": "nonzero", "margin": 0.3}),
    "margin_squared": ("margin", {"distance": "squared_euclidean", "margin": 0.5}),
}
LOSS_CLASSES = {"nca": NCALoss, "sct": SCTLoss, "margin": MarginTripletLoss}
SCENARIOS = scenarios()


def _mined_list(t):
    return list(zip(t.anchor.tolist(), t.positive.tolist(), t.negative.tolist()))


def _run_criterion(criterion, scenario, seed):
    anchors, labels, refs, ref_labels, self_index = scenario.inputs()
    torch.random.default_generator.manual_seed(seed)  # the miner draws from it; CPU-only seeding is cheap
    if scenario.is_self:  # the plain single-device call
        loss, stats = criterion(anchors, labels)
    else:
        loss, stats = criterion(anchors, labels, refs, ref_labels, self_index)
    return loss, stats


@pytest.mark.parametrize("pos,neg", list(itertools.product(POS, NEG)))
@pytest.mark.parametrize("loss_name", list(TRIPLET_LOSSES))
def test_triplet_loss_and_gradient_equal_brute_force(loss_name, pos, neg):
    kind, params = TRIPLET_LOSSES[loss_name]
    criterion = Criterion(LOSS_CLASSES[kind](**params), TripletMiner(pos, neg))
    for seed, scenario in enumerate(SCENARIOS):
        scenario.refs.grad = None
        loss, stats = _run_criterion(criterion, scenario, seed)
        loss.backward()
        grad = scenario.refs.grad.clone()

        anchors, labels, refs, ref_labels, self_index = scenario.inputs()
        with torch.no_grad():
            sim = anchors @ refs.T
        torch.random.default_generator.manual_seed(seed)  # replay the miner's random draws, then check them
        mined = check_mined(_mined_list(criterion.miner(sim, labels, ref_labels, self_index)),
                            sim, labels, ref_labels, self_index, pos, neg)
        scenario.refs.grad = None
        expected = triplet_loss(kind, params, anchors, refs, sim, mined)
        expected.backward()
        msg = f"{scenario.name}: {len(mined)} triplets"
        assert_close(loss.detach(), expected.detach()), msg
        assert_close(grad, scenario.refs.grad), msg
        assert stats["valid_triplets"].item() == len(mined), msg
        if not mined:
            assert loss.item() == 0.0 and torch.all(grad == 0), msg


@pytest.mark.parametrize("name", ["all_same_label", "all_distinct_labels", "only_duplicates"])
def test_no_valid_triplet_gives_zero_loss_and_zero_gradient(name):
    scenario = next(s for s in SCENARIOS if s.name == name)
    for loss in (NCALoss(), SCTLoss(), MarginTripletLoss()):
        scenario.refs.grad = None
        value, stats = Criterion(loss, TripletMiner("easy", "hardest"))(scenario.refs, scenario.ref_labels)
        value.backward()
        assert value.item() == 0.0 and value.requires_grad
        assert torch.all(scenario.refs.grad == 0)
        assert stats["valid_triplets"].item() == 0 and stats["points"].shape == (0, 2)
        assert "hn_ratio" not in stats


def test_stats_report_hn_ratio_and_mean_similarities():
    scenario = SCENARIOS[0]
    loss, stats = Criterion(NCALoss(), TripletMiner("easy", "hardest"))(scenario.refs, scenario.ref_labels)
    s_ap, s_an = stats["points"].unbind(1)
    assert stats["hn_ratio"].item() == pytest.approx((s_an > s_ap).double().mean().item())
    assert stats["s_ap"].item() == pytest.approx(s_ap.mean().item())
    assert stats["s_an"].item() == pytest.approx(s_an.mean().item())
    assert all(not v.requires_grad for v in stats.values())


def test_criterion_matrix_is_not_kept_for_triplet_losses_in_eval():
    scenario = SCENARIOS[0]
    with torch.no_grad():
        loss, _ = Criterion(SCTLoss())(scenario.refs, scenario.ref_labels)
    assert not loss.requires_grad


# ----------------------------------------------------------------------------- configs
CONF = Path(__file__).resolve().parents[1] / "conf"
LOSS_YAMLS = sorted(p.stem for p in (CONF / "loss").glob("*.yaml"))
MINING_YAMLS = sorted(p.stem for p in (CONF / "mining").glob("*.yaml"))


def _load(group, name):
    """Compose through Hydra when the root config exists, else read the one file."""
    from omegaconf import OmegaConf

    if (CONF / "config.yaml").exists():
        from hydra import compose, initialize_config_dir

        overrides = [f"{group}={name}"]
        if name == "proxy_anchor":
            overrides.append("loss.num_classes=5")
        with initialize_config_dir(config_dir=str(CONF), version_base=None):
            cfg = compose(config_name="config", overrides=overrides)
        return cfg[group]
    cfg = OmegaConf.merge({"model": {"dim": 4}}, {group: OmegaConf.load(CONF / group / f"{name}.yaml")})
    if name == "proxy_anchor":
        cfg.loss.num_classes = 5
    return cfg[group]


def test_config_groups_are_complete():
    assert {"sct", "nca", "margin", "contrastive", "multi_similarity", "proxy_anchor"} <= set(LOSS_YAMLS)
    expected = {f"{p}_{'hard' if n == 'hardest' else n}" for p in POS for n in NEG}
    assert set(MINING_YAMLS) == expected | {"default"}  # the paper's preset names, and mining.pos/neg


@pytest.mark.parametrize("name", MINING_YAMLS)
def test_every_mining_config_instantiates(name):
    from hydra.utils import instantiate

    miner = instantiate(_load("mining", name))
    pos, neg = name.split("_") if name != "default" else ("easy", "hard")
    assert isinstance(miner, TripletMiner)
    assert (miner.pos, miner.neg) == (pos, "hardest" if neg == "hard" else neg)


@pytest.mark.parametrize("name", LOSS_YAMLS)
def test_every_loss_config_builds_a_working_criterion(name):
    from hydra.utils import instantiate

    cfg = _load("loss", name)
    loss = instantiate(cfg)
    dim = getattr(loss, "dim", 4)
    g = torch.Generator().manual_seed(0)
    embeddings = torch.nn.functional.normalize(torch.randn(10, dim, generator=g), dim=1).requires_grad_()
    value, stats = Criterion(loss, instantiate(_load("mining", "easy_hard")))(embeddings, torch.arange(10) % 5)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(embeddings.grad).all()
    assert stats["valid_triplets"].item() == 10


def test_proxy_anchor_config_requires_num_classes():
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue

    cfg = OmegaConf.load(CONF / "loss" / "proxy_anchor.yaml")
    assert OmegaConf.is_missing(cfg, "num_classes")
    with pytest.raises(MissingMandatoryValue):
        _ = cfg.num_classes


NAN_LOSSES = {
    "nca": lambda: NCALoss(),
    "sct": lambda: SCTLoss(),
    "margin": lambda: MarginTripletLoss(),
    "contrastive": lambda: ContrastiveLoss(),
    "multi_similarity": lambda: MultiSimilarityLoss(),
    "proxy_anchor": lambda: ProxyAnchorLoss(num_classes=4, dim=5).double(),
}


@pytest.mark.parametrize("loss_name", list(NAN_LOSSES))
def test_a_nan_embedding_makes_the_loss_nan_instead_of_vanishing_from_mining(loss_name):
    scenario = SCENARIOS[0]
    embeddings = scenario.refs.detach().clone()
    embeddings[3] = float("nan")
    embeddings.requires_grad_()
    loss, _ = Criterion(NAN_LOSSES[loss_name]())(embeddings, scenario.ref_labels)
    assert torch.isnan(loss) and loss.requires_grad


def test_mining_is_chosen_by_pos_and_neg_keys_as_well_as_by_preset_name():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        by_keys = compose(config_name="config", overrides=["mining=default", "mining.pos=all", "mining.neg=semihard"])
        by_name = compose(config_name="config", overrides=["mining=all_semihard"])
        tweaked = compose(config_name="config", overrides=["mining=easy_hard", "mining.neg=easy"])
    assert by_keys.mining == by_name.mining
    assert (tweaked.mining.pos, tweaked.mining.neg, tweaked.mining.scope) == ("easy", "easy", "global")


# ----------------------------------------------------------------------------- input checks
def test_raw_embeddings_are_refused_with_a_clear_error():
    from hardneg.errors import UserError

    raw = torch.randn(12, 8, generator=torch.Generator().manual_seed(0)) * 10
    with pytest.raises(UserError, match="L2-normalised") as err:
        Criterion(SCTLoss())(raw, torch.arange(12) // 2)
    assert "normalize" in str(err.value)
    refs = torch.nn.functional.normalize(raw, dim=1)
    with pytest.raises(UserError, match="L2-normalised"):  # raw references are caught as well
        Criterion(SCTLoss())(refs[:4], torch.arange(4) // 2, raw, torch.arange(12) // 2)


@pytest.mark.parametrize("loss_name", ["sct", "margin", "multi_similarity"])
def test_under_bf16_autocast_the_matrix_and_loss_are_float32(loss_name):
    """CPU autocast bf16: the loss equals the float32 computation on the same (bf16) embeddings."""
    loss_fn = {"sct": SCTLoss, "margin": MarginTripletLoss, "multi_similarity": MultiSimilarityLoss}[loss_name]()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 16, generator=g)
    layer = torch.nn.Linear(16, 8)
    labels = torch.arange(64) // 4
    with torch.autocast("cpu", dtype=torch.bfloat16):
        embeddings = torch.nn.functional.normalize(layer(x), dim=1)
        assert embeddings.dtype == torch.bfloat16  # what a network under autocast hands over
        loss, stats = Criterion(loss_fn)(embeddings, labels)
    assert loss.dtype == torch.float32 and stats["points"].dtype == torch.float32
    expected, _ = Criterion(loss_fn)(embeddings.detach().float(), labels)
    assert torch.equal(loss.detach(), expected)
    loss.backward()
    assert layer.weight.grad is not None and torch.isfinite(layer.weight.grad).all()


def test_pair_losses_mine_only_when_stats_are_asked_for(monkeypatch):
    calls = []
    miner = TripletMiner()
    monkeypatch.setattr(TripletMiner, "__call__", lambda self, *a, **k: calls.append(1) or _no_triplets(a[0]))
    e = torch.nn.functional.normalize(torch.randn(10, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    criterion = Criterion(MultiSimilarityLoss(), miner)
    loss, stats = criterion(e, torch.arange(10) % 5, stats=False)
    assert not calls and "hn_ratio" not in stats and "ms_valid_anchors" in stats
    criterion(e, torch.arange(10) % 5)
    assert calls == [1]


def _no_triplets(sim):
    from hardneg.mining import Triplets

    empty = torch.zeros(0, dtype=torch.long)
    return Triplets(empty, empty, empty, num_anchors=len(sim))
