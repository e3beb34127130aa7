"""EmbeddingNet's GPU speed options: channels_last and compile (default off)."""
from __future__ import annotations

import pytest
import torch

from hardneg.models import EmbeddingNet


def test_channels_last_gives_the_same_embeddings():
    torch.manual_seed(0)
    plain = EmbeddingNet("test_efficientnet", dim=8, pretrained=False).eval()
    nhwc = EmbeddingNet("test_efficientnet", dim=8, pretrained=False, channels_last=True).eval()
    nhwc.load_state_dict(plain.state_dict())
    conv = next(m for m in nhwc.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(nhwc(images), plain(images), rtol=1e-4, atol=1e-5)


def test_options_are_off_by_default():
    net = EmbeddingNet("test_efficientnet", dim=8, pretrained=False)
    assert not net.channels_last and not net.compiled


@pytest.mark.slow
def test_compile_keeps_the_state_dict_and_the_embeddings():
    torch.manual_seed(0)
    plain = EmbeddingNet("test_efficientnet", dim=8, pretrained=False).eval()
    compiled = EmbeddingNet("test_efficientnet", dim=8, pretrained=False, compile=True).eval()
    assert compiled.state_dict().keys() == plain.state_dict().keys()
    compiled.load_state_dict(plain.state_dict())
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(compiled(images), plain(images), rtol=1e-4, atol=1e-5)
