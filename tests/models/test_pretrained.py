"""Offline pretrained backbone: the packaged checkpoint maps onto timm and classifies photos."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from hardneg.errors import UserError
from hardneg.models.pretrained import create_backbone, load_by_position

MILITARY_UNIFORM, DAISY = 652, 985


def sample_photo(name: str) -> torch.Tensor:
    import matplotlib
    import sklearn.datasets

    paths = {
        "grace_hopper": os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg"),
        "flower": os.path.join(os.path.dirname(sklearn.datasets.__file__), "images", "flower.jpg"),
    }
    image = Image.open(paths[name]).convert("RGB").resize((224, 224), Image.BICUBIC)
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255
    return ((x - 0.5) / 0.5)[None]  # timm's normalisation for tf_efficientnet_lite0


@pytest.fixture(scope="module")
def classifier():
    return create_backbone("tf_efficientnet_lite0", pretrained=True, num_classes=1000).eval()


@pytest.mark.parametrize("photo, label", [("grace_hopper", MILITARY_UNIFORM), ("flower", DAISY)])
@torch.no_grad()
def test_packaged_imagenet_weights_classify_sample_photos(classifier, photo, label):
    top3 = classifier(sample_photo(photo)).topk(3).indices[0].tolist()
    assert label in top3, f"{photo}: top-3 ImageNet classes {top3}"


def test_random_init_does_not_classify(classifier):
    random = create_backbone("tf_efficientnet_lite0", pretrained=False, num_classes=1000).eval()
    with torch.no_grad():
        assert MILITARY_UNIFORM not in random(sample_photo("grace_hopper")).topk(3).indices[0].tolist()


def test_feature_extractor_drops_the_classifier():
    backbone = create_backbone("tf_efficientnet_lite0", pretrained=True, num_classes=0)
    assert backbone.num_features == 1280
    with torch.no_grad():
        assert backbone(torch.zeros(1, 3, 64, 64)).shape == (1, 1280)


def test_shape_mismatch_is_reported():
    model = torch.nn.Linear(3, 2)
    with pytest.raises(UserError, match="has shape"):
        load_by_position(model, {"a": torch.zeros(2, 4), "b": torch.zeros(2)}, "bad.pth")


def test_unknown_backbone_is_named():
    with pytest.raises(UserError, match="not a timm model"):
        create_backbone("resnet_does_not_exist", pretrained=False)


def test_hub_failure_explains_the_offline_options(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="model.pretrained=false"):
        create_backbone("test_resnet", pretrained=True)
