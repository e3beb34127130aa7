"""Embedding network: timm backbone -> linear head -> L2 normalisation (as in the paper)."""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hardneg.models.pretrained import create_backbone

BATCHNORM_MODES = ("train", "frozen", "sync")
NECKS = ("none", "bn")

# A frozen backbone or frozen BatchNorm is in eval mode when fitting starts, on purpose (see
# EmbeddingNet.__init__); Lightning would warn about it at every fit.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")


def freeze_batchnorm_statistics(module: nn.Module) -> None:
    """Put every BatchNorm of ``module`` in eval mode: running statistics stay as pretrained,
    affine weights still train (``model.batchnorm=frozen``)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


class EmbeddingNet(nn.Module):
    """``forward(images)`` and, for cached backbone features, ``embed_features(features)``.

    ``freeze_backbone`` keeps the backbone fixed (no gradient, eval mode, BatchNorm statistics
    untouched): only the head trains. ``batchnorm``: ``train`` (the paper: statistics adapt),
    ``frozen`` (statistics fixed, affine weights train), ``sync`` (SyncBatchNorm under DDP,
    converted by the trainer).

    GPU options (default off): ``channels_last`` stores the backbone's weights and feeds its
    images in NHWC layout (faster convolutions on tensor cores, with ``trainer.precision`` at
    bf16-mixed / 16-mixed); ``compile`` compiles the backbone with ``torch.compile`` in place
    (state dict keys unchanged; the first steps pay the compilation).
    ``neck``: ``bn`` puts a BatchNorm1d between the linear head and the L2 normalisation (the
    "BN-neck" of re-identification models, often used with ViT/ConvNeXt embeddings).
    ``backbone_kwargs`` go to ``timm.create_model`` (e.g. ``dynamic_img_size`` for a ViT).
    """

    def __init__(
        self,
        backbone: str = "tf_efficientnet_lite0",
        dim: int = 64,
        pretrained: bool = True,
        weights: str | None = None,
        freeze_backbone: bool = False,
        batchnorm: str = "train",
        channels_last: bool = False,
        compile: bool = False,
        neck: str = "none",
        backbone_kwargs: dict | None = None,
    ):
        super().__init__()
        if batchnorm not in BATCHNORM_MODES:
            raise ValueError(f"model.batchnorm={batchnorm!r} is unknown; choose one of {list(BATCHNORM_MODES)}")
        if neck not in NECKS:
            raise ValueError(f"model.neck={neck!r} is unknown; choose one of {list(NECKS)}")
        if dim < 1:
            raise ValueError(f"model.dim must be >= 1, got {dim}")
        self.backbone_name, self.pretrained, self.weights = backbone, pretrained, weights
        self.backbone = create_backbone(backbone, pretrained, weights, **dict(backbone_kwargs or {}))
        self.head = nn.Linear(self.backbone.num_features, dim)
        self.neck = nn.BatchNorm1d(dim) if neck == "bn" else nn.Identity()
        self.dim, self.freeze_backbone, self.batchnorm = dim, freeze_backbone, batchnorm
        if freeze_backbone:
            self.backbone.requires_grad_(False)
        self.channels_last, self.compiled = channels_last, compile
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        if compile:
            self.backbone.compile()  # in place: parameters and state dict keys stay as they are
        # Apply the frozen parts' eval mode now: Lightning >= 2.2 never calls .train() when fitting
        # (it keeps, and after validation restores, each submodule's own mode), so otherwise
        # frozen BatchNorm would update its statistics until someone called it.
        self.train()

    @property
    def num_features(self) -> int:
        return self.backbone.num_features

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        elif mode and self.batchnorm == "frozen":
            freeze_batchnorm_statistics(self.backbone)
        return self

    def embed_features(self, features: Tensor) -> Tensor:
        return F.normalize(self.neck(self.head(features)), dim=-1)

    def forward(self, images: Tensor) -> Tensor:
        if self.channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.embed_features(self.backbone(images))
