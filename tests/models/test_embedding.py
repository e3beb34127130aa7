"""EmbeddingNet: unit-norm output, frozen backbone, BatchNorm modes; the feature cache."""
import pytest
import torch

from hardneg.data.glyphs import GlyphsDataModule
from hardneg.models import EmbeddingNet
from hardneg.models.feature_cache import backbone_features, cached_backbone_features


def test_embeddings_are_unit_vectors_of_dim():
    net = EmbeddingNet("test_efficientnet", dim=8, pretrained=False)
    e = net(torch.randn(4, 3, 32, 32))
    assert e.shape == (4, 8)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(4))


def test_frozen_backbone_stays_in_eval_and_gets_no_gradient():
    net = EmbeddingNet("test_efficientnet", dim=8, pretrained=False, freeze_backbone=True).train()
    assert not net.backbone.training and net.head.training
    net(torch.randn(4, 3, 32, 32)).sum().backward()
    assert all(p.grad is None for p in net.backbone.parameters())
    assert net.head.weight.grad is not None


def test_frozen_batchnorm_keeps_running_statistics():
    net = EmbeddingNet("test_efficientnet", dim=8, pretrained=False, batchnorm="frozen").train()
    bn = next(m for m in net.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    net(torch.randn(4, 3, 32, 32) * 5 + 3)
    assert torch.equal(bn.running_mean, before)
    assert bn.weight.requires_grad


def test_frozen_parts_are_in_eval_mode_from_construction():
    # Lightning >= 2.2 never calls .train() when fitting, so the constructor must set the modes.
    frozen_bn = EmbeddingNet("test_efficientnet", dim=8, pretrained=False, batchnorm="frozen")
    assert not any(m.training for m in frozen_bn.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert frozen_bn.head.training
    assert not EmbeddingNet("test_efficientnet", dim=8, pretrained=False, freeze_backbone=True).backbone.training


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="model.batchnorm"):
        EmbeddingNet("test_efficientnet", pretrained=False, batchnorm="bogus")


def test_feature_cache_computes_once_and_matches_the_backbone(tmp_path, monkeypatch):
    dm = GlyphsDataModule(max_classes=4, image_size=32, images_per_font=1, batch_size=4)
    net = EmbeddingNet("test_efficientnet", dim=8, pretrained=False, freeze_backbone=True)
    train, test = cached_backbone_features(net, dm, tmp_path)
    assert train.shape == (len(dm.splits.train), net.num_features)
    torch.testing.assert_close(test, backbone_features(net.backbone, dm.splits.test))
    import hardneg.models.feature_cache as fc

    monkeypatch.setattr(fc, "backbone_features", lambda *a, **k: pytest.fail("recomputed despite the cache"))
    train2, _ = cached_backbone_features(net, dm, tmp_path)
    assert torch.equal(train, train2)
    # Another random init is another cache entry.
    other = EmbeddingNet("test_efficientnet", dim=8, pretrained=False, freeze_backbone=True)
    monkeypatch.setattr(fc, "backbone_features", backbone_features)
    assert not torch.equal(cached_backbone_features(other, dm, tmp_path)[0], train)
