"""Every model preset builds and trains one step (random weights, tiny glyphs); the modern
presets' pretrained weights, absent here, stop the run with a message instead of a traceback."""
from __future__ import annotations

import time

import pytest
import timm
import torch

from hardneg.config import compose, config_dir
from hardneg.errors import UserError
from hardneg.models.pretrained import create_backbone

MODERN = ["vit_s16_in21k", "vit_s16_dino", "vit_s14_dinov2", "convnext_t"]
PRESETS = sorted(p.stem for p in (config_dir() / "model").glob("*.yaml"))
# DINOv2's LayerScale starts at 1e-5: a *random* DINOv2 maps every image to nearly the same
# embedding (all pairs are duplicates, so no triplet). Pretrained weights overwrite it anyway.
RANDOM_INIT_FIXES = {"vit_s14_dinov2": ["+model.backbone_kwargs.init_values=1.0"]}


def one_step(cfg, images: int = 12, size: int = 32):
    """Build the preset's net, criterion and optimiser as a run does; one SGD/AdamW step on random
    images of 6 classes x 2. Returns (loss, stats, parameters before, net)."""
    from hardneg.builders import build_criterion, build_net
    from hardneg.optim import build_optimizer

    torch.manual_seed(0)
    net, _ = build_net(cfg)
    criterion = build_criterion(cfg)
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    groups = OmegaConf.to_container(cfg.optim.param_groups, resolve=True) if cfg.optim.get("param_groups") else {}
    optimizer = build_optimizer(instantiate(cfg.optim.optimizer), net, criterion, **groups)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    x, labels = torch.randn(images, 3, size, size), torch.arange(images // 2).repeat_interleave(2)
    loss, stats = criterion(net(x), labels)
    loss.backward()
    optimizer.step()
    return loss, stats, before, net


@pytest.mark.parametrize("preset", PRESETS)
def test_every_model_preset_trains_one_step_from_random_weights(preset):
    optim = "adamw" if preset in MODERN else "sgd"  # the optimiser each is meant for
    cfg = compose([f"model={preset}", f"optim={optim}", "model.pretrained=false", "model.dim=16",
                   "model.cache_features=false", *RANDOM_INIT_FIXES.get(preset, [])])
    loss, stats, before, net = one_step(cfg)
    assert torch.isfinite(loss) and stats["valid_triplets"] > 0
    moved = [n for n, p in net.named_parameters() if not torch.equal(p, before[n])]
    assert any(n.startswith("head") for n in moved)
    assert any(n.startswith("backbone") for n in moved) != bool(cfg.model.freeze_backbone)


@pytest.mark.slow
def test_a_modern_preset_runs_through_the_real_entry_point(make_cfg):
    from hardneg.run import train

    result = train(make_cfg(["model=vit_s16_dino", "optim=adamw", "model.pretrained=false", "model.dim=16",
                             "trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "eval.at_start=false"]))
    assert result["train"]["valid_triplets"] > 0 and "recall@1" in result["final"]


@pytest.mark.parametrize("preset", MODERN)
def test_modern_presets_name_timm_weights_with_their_own_input_config(preset):
    cfg = compose([f"model={preset}"])
    assert cfg.model.backbone in timm.list_models(pretrained=True)
    pretrained_cfg = timm.models.get_pretrained_cfg(cfg.model.backbone)
    assert pretrained_cfg.hf_hub_id and pretrained_cfg.mean and pretrained_cfg.input_size[-1] >= 224


@pytest.mark.parametrize("preset", MODERN)
def test_absent_weights_with_the_hub_offline_stop_before_any_download(monkeypatch, preset):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")  # an empty cache, whatever this machine holds
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, filename, **kw: None)
    real_create = timm.create_model

    def no_download(name, pretrained=False, **kwargs):
        assert not pretrained, "tried to download"
        return real_create(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", no_download)
    name = compose([f"model={preset}"]).model.backbone
    start = time.perf_counter()
    with pytest.raises(UserError) as err:
        create_backbone(name, pretrained=True)
    message = str(err.value)
    assert name in message and "HF_HUB_OFFLINE=1" in message
    assert f"timm.create_model('{name}', pretrained=True)" in message  # the one command that fetches them
    print(f"{preset}: refused in {time.perf_counter() - start:.3f} s")  # measured, not asserted


def test_resnet50_preset_is_torchvisions_v1_weights():
    assert compose(["model=resnet50"]).model.backbone == "resnet50.tv_in1k"
    assert compose(["experiment=paper/cub_sct"]).model.backbone == "resnet50.tv_in1k"


def test_bn_neck_and_backbone_kwargs_reach_the_net():
    from hardneg.models import EmbeddingNet

    net = EmbeddingNet("vit_small_patch16_224", dim=8, pretrained=False, neck="bn",
                       backbone_kwargs={"dynamic_img_size": True, "img_size": 32})
    assert isinstance(net.neck, torch.nn.BatchNorm1d)
    out = net(torch.randn(3, 3, 48, 48))  # another size than built for: dynamic
    assert out.shape == (3, 8) and torch.allclose(out.norm(dim=1), torch.ones(3))
    with pytest.raises(ValueError, match="model.neck"):
        EmbeddingNet("test_efficientnet", dim=8, pretrained=False, neck="ln")


@pytest.mark.parametrize("name", sorted(p.stem for p in (config_dir() / "experiment" / "modern").glob("*.yaml")))
def test_modern_experiment_presets_compose(name):
    cfg = compose([f"experiment=modern/{name}"])
    assert cfg.optim.optimizer._target_ == "torch.optim.AdamW" and cfg.data.transform == "timm"
    assert cfg.data.timm_model == cfg.model.backbone
    paper = compose([f"experiment=paper/{name}"])
    assert (cfg.model.dim, cfg.data.batch_size, cfg.trainer.max_epochs) == (
        paper.model.dim, paper.data.batch_size, paper.trainer.max_epochs)
