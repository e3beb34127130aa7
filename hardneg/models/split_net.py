"""A backbone split in two: frozen early stages (cached) + trainable last stage(s) + head.

The CPU-scale testbed closer to the paper, where the whole network is fine-tuned. Training
only a linear head on frozen features (``model=efficientnet_lite0``) cannot move the
representation itself; full fine-tuning costs about a second per step on 2 CPU cores. In
between: the early stages stay frozen and their *spatial* feature maps are computed once
and cached (hardneg/models/feature_cache.py, same key scheme), while the last
``train_stages`` stages, the pooling and the linear head train on them. The late stages
work on small maps (4 x 4 at 128 px), so a step costs little more than a head-only one.

The frozen part is exposed as ``.backbone`` and the class offers ``embed_features``, so the
feature cache, the builders and the LightningModule use it exactly like ``EmbeddingNet``.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from hardneg.models.embedding import freeze_batchnorm_statistics
from hardneg.models.pretrained import create_backbone

SPLIT_BATCHNORM_MODES = ("train", "frozen")


def backbone_stages(model: nn.Module) -> list[nn.Module]:
    """A timm backbone as an ordered list of stages whose composition is its feature map.

    Supported: the EfficientNet family (conv_stem/bn1, blocks[i], conv_head/bn2) and ResNets
    (conv1/bn1/act1/maxpool, layer1..4): the two shapes of the backbones this project uses.
    """
    if all(hasattr(model, a) for a in ("conv_stem", "bn1", "blocks", "conv_head", "bn2")):
        return [nn.Sequential(model.conv_stem, model.bn1), *model.blocks, nn.Sequential(model.conv_head, model.bn2)]
    if all(hasattr(model, a) for a in ("conv1", "bn1", "act1", "maxpool", "layer4")):
        stem = nn.Sequential(model.conv1, model.bn1, model.act1, model.maxpool)
        return [stem, model.layer1, model.layer2, model.layer3, model.layer4]
    raise ValueError(
        f"model.backbone={type(model).__name__} cannot be split into stages; "
        "use an EfficientNet or ResNet backbone, or model=efficientnet_lite0 (head only)"
    )


class SplitEmbeddingNet(nn.Module):
    """``forward(images)`` = ``embed_features(backbone(images))``.

    ``backbone``: the frozen early stages (eval mode, no gradient) -> spatial feature map.
    ``top``: the last ``train_stages`` stages, trained; then global average pooling, the
    linear head and L2 normalisation. ``batchnorm`` applies to ``top``: ``frozen`` keeps
    the ImageNet statistics (affine weights still train) — BatchNorm statistics adapting to
    glyphs alone cost backbone R@1 on this data — ``train`` lets them adapt as in the paper.
    ``freeze_backbone`` must stay true: it names the frozen stem for the feature cache.
    """

    def __init__(
        self,
        backbone: str = "tf_efficientnet_lite0",
        dim: int = 64,
        pretrained: bool = True,
        weights: str | None = None,
        train_stages: int = 2,
        batchnorm: str = "frozen",
        freeze_backbone: bool = True,
    ):
        super().__init__()
        if batchnorm not in SPLIT_BATCHNORM_MODES:
            raise ValueError(f"model.batchnorm={batchnorm!r} is unknown; choose one of {list(SPLIT_BATCHNORM_MODES)}")
        if dim < 1:
            raise ValueError(f"model.dim must be >= 1, got {dim}")
        if not freeze_backbone:
            raise ValueError("model.freeze_backbone must be true for a split net: its early stages are the frozen part")
        full = create_backbone(backbone, pretrained, weights)
        stages = backbone_stages(full)
        if not 1 <= train_stages < len(stages):
            raise ValueError(f"model.train_stages={train_stages} must be in 1..{len(stages) - 1} for {backbone}")
        cut = len(stages) - train_stages
        self.backbone = nn.Sequential(*stages[:cut])
        self.top = nn.Sequential(*stages[cut:])
        self.head = nn.Linear(full.num_features, dim)
        # Part of the feature-cache key: another cut point caches another feature map.
        self.backbone_name = f"{backbone}-frozen{cut}of{len(stages)}"
        self.pretrained, self.weights = pretrained, weights
        self.dim, self.train_stages, self.batchnorm = dim, train_stages, batchnorm
        self.freeze_backbone = True
        self._num_features = full.num_features
        self.backbone.requires_grad_(False)
        self.train()  # apply the frozen parts' eval mode now (see EmbeddingNet.__init__)

    @property
    def num_features(self) -> int:
        return self._num_features

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()
        if mode and self.batchnorm == "frozen":
            freeze_batchnorm_statistics(self.top)
        return self

    def embed_features(self, features: Tensor) -> Tensor:
        """Cached stem feature maps [N, C, H, W] -> unit embeddings [N, dim]."""
        pooled = self.top(features).mean(dim=(2, 3))
        return F.normalize(self.head(pooled), dim=-1)

    def forward(self, images: Tensor) -> Tensor:
        return self.embed_features(self.backbone(images))
