"""The split testbed net: frozen cached stem + trained last stages + head."""
import pytest
import torch

from hardneg.models.split_net import SplitEmbeddingNet, backbone_stages


def small_net(**kw):
    return SplitEmbeddingNet(backbone="test_efficientnet", dim=8, pretrained=False, **kw)


def test_forward_is_top_of_cached_stem_features():
    torch.manual_seed(0)
    net = small_net(train_stages=2).eval()
    x = torch.randn(4, 3, 32, 32)
    features = net.backbone(x)
    assert features.dim() == 4  # a spatial map is cached, not pooled features
    e = net(x)
    assert torch.allclose(e, net.embed_features(features), atol=1e-6)
    assert torch.allclose(e.norm(dim=1), torch.ones(4), atol=1e-5)


def test_only_the_top_trains_and_frozen_batchnorm_keeps_its_statistics():
    net = small_net(train_stages=2, batchnorm="frozen")
    assert not any(p.requires_grad for p in net.backbone.parameters())
    assert all(p.requires_grad for p in net.top.parameters()) and net.head.weight.requires_grad
    net.train()
    assert not net.backbone.training
    bns = [m for m in net.top.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and not any(m.training for m in bns)
    before = [m.running_mean.clone() for m in bns]
    net.embed_features(net.backbone(torch.randn(6, 3, 32, 32))).sum().backward()
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, bns))
    assert net.top[-1][0].weight.grad is not None
    train_bn = small_net(train_stages=2, batchnorm="train").train()
    assert all(m.training for m in train_bn.top.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))


def test_more_train_stages_move_the_cut_and_the_cache_key():
    a, b = small_net(train_stages=1), small_net(train_stages=3)
    n = len(a.backbone) + len(a.top)
    assert len(a.top) == 1 and len(b.top) == 3 and len(b.backbone) == n - 3
    assert a.backbone_name != b.backbone_name


def test_bad_settings_name_the_key():
    with pytest.raises(ValueError, match="model.train_stages"):
        small_net(train_stages=0)
    with pytest.raises(ValueError, match="model.batchnorm"):
        small_net(batchnorm="sync")
    with pytest.raises(ValueError, match="model.freeze_backbone"):
        small_net(freeze_backbone=False)


def test_resnet_stages_compose_to_its_feature_map():
    import timm

    model = timm.create_model("resnet18", pretrained=False, num_classes=0).eval()
    x = torch.randn(2, 3, 32, 32)
    h = x
    for stage in backbone_stages(model):
        h = stage(h)
    assert torch.allclose(h, model.forward_features(x), atol=1e-5)


@pytest.mark.slow  # a whole (tiny) run: about 10 s alone, a minute on a busy machine
def test_a_short_run_trains_on_cached_stem_features(make_cfg):
    from pathlib import Path

    from hardneg.run import train

    cfg = make_cfg(["model=efficientnet_lite0_split", "model.backbone=test_efficientnet", "model.pretrained=false",
                    "model.dim=8", "callbacks.triplet_space=null", "callbacks.retrieval_examples=null"])
    result = train(cfg)
    assert set(result["final"]) >= {"recall@1", "map@r"}
    cached = list(Path(cfg.paths.cache_dir, "features").glob("*-test_efficientnet-frozen*.pt"))
    assert len(cached) == 1  # the stem's feature maps, keyed by the cut point
