"""The fast pipeline gives the reference pipeline's tensors, up to resampling noise (stated tolerances)."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from hardneg.data.cub import CUBDataModule
from hardneg.data.fast_images import FastPaperTransform, _decode, resized_size
from hardneg.data.images import ImageListDataset
from hardneg.data.transforms import paper_transform
from hardneg.errors import ConfigError

MEAN, STD = (0.4707, 0.4601, 0.4549), (0.2767, 0.2760, 0.2850)
# CUB-like (500x375, both orientations) and SOP-like (413x517, 600x450) crops of real photographs.
SIZES = [(500, 375), (375, 500), (600, 450), (413, 517)]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    datasets = pytest.importorskip("sklearn.datasets")
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for i, array in enumerate(datasets.load_sample_images().images):
        image = Image.fromarray(array)
        for j, (w, h) in enumerate(SIZES):
            path = folder / f"{i}_{j}.jpg"
            image.resize((int(w * 1.1), int(h * 1.1))).crop((3, 5, 3 + w, 5 + h)).save(path, quality=90)
            paths.append(path)
    return paths


def levels(reference: torch.Tensor, fast: torch.Tensor) -> torch.Tensor:
    """Absolute differences in uint8 levels of the input image."""
    return ((reference - fast) * torch.tensor(STD).view(3, 1, 1) * 255).abs()


def compare(paths, size: int, train: bool, box=None) -> torch.Tensor:
    reference, fast = paper_transform(size, MEAN, STD, train), FastPaperTransform(size, MEAN, STD, train)
    diffs = []
    for seed, path in enumerate(paths):
        image = Image.open(path).convert("RGB")
        torch.manual_seed(seed)
        a = reference(image.crop(box) if box else image)
        torch.manual_seed(seed)  # same seed: the fast path must draw the same crop and flip
        b = fast(str(path), box)
        assert a.shape == b.shape == (3, size, size) and b.dtype == torch.float32
        diffs.append(levels(a, b))
    return torch.stack(diffs)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_without_draft_equal_up_to_resize_rounding(photos, train):
    d = compare(photos, 256, train)  # 256 px from ~500 px: no reduced-scale decode
    assert d.max() <= 1.0 + 1e-3 and d.mean() <= 0.01


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_with_draft_equal_up_to_resampling_noise(photos, train):
    x, _, _ = _decode(photos[0].read_bytes(), None, 70)
    assert x.shape[1] < 375  # the JPEG really was decoded at reduced scale
    d = compare(photos, 64, train)
    assert d.mean() <= 1.5 and d.flatten().quantile(0.99) <= 12.0


def test_box_crop_matches(photos):
    d = compare(photos[:2], 128, train=False, box=(40, 30, 330, 300))  # no draft: the box is < 4 x 128
    assert d.max() <= 1.0 + 1e-3 and d.mean() <= 0.01
    d = compare(photos[:2], 48, train=False, box=(40, 30, 330, 300))  # 1/2-scale draft of the box
    assert d.mean() <= 1.5 and d.flatten().quantile(0.99) <= 12.0


def test_resized_size_is_torchvisions(photos):
    from torchvision import transforms as T

    for w, h in [(500, 375), (375, 500), (333, 500), (1023, 17), (17, 1023), (256, 256), (281, 1000)]:
        for short in (64, 256, 281):
            assert T.Resize(short)(Image.new("RGB", (w, h))).size[::-1] == resized_size(w, h, short)


def test_corrupt_file_gives_the_references_grey(tmp_path, photos):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(photos[0].read_bytes()[:5000])  # a truncated JPEG
    labels = [0, 0]
    kw = dict(paths=[photos[0], bad], labels=labels)
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="bad.jpg"):
        fast = ImageListDataset(**kw, transform=FastPaperTransform(32, MEAN, STD, True))[1][0]
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="bad.jpg"):
        reference = ImageListDataset(**kw, transform=paper_transform(32, MEAN, STD, True))[1][0]
    assert torch.allclose(fast, reference, atol=1e-5)


def test_pipeline_is_chosen_by_config(tmp_path, tiny_trees):
    data = tiny_trees.cub(tmp_path)
    fast = CUBDataModule(root=str(data), image_size=16)
    assert isinstance(fast.train_transform, FastPaperTransform) and "train=False" in repr(fast.eval_transform)
    reference = CUBDataModule(root=str(data), image_size=16, pipeline="reference")
    assert not isinstance(reference.train_transform, FastPaperTransform)
    fast.setup(), reference.setup()
    torch.manual_seed(1)
    a = fast.splits.train[3][0]
    torch.manual_seed(1)
    b = reference.splits.train[3][0]
    assert a.shape == b.shape == (3, 16, 16) and levels(a, b).max() <= 1.0 + 1e-3
    with pytest.raises(ConfigError, match=r"data.pipeline='turbo' is unknown; choose one of \['fast', 'reference'\]"):
        CUBDataModule(root=str(data), pipeline="turbo")


def test_normalize_on_device_yields_uint8_batches_normalised_after_transfer(tmp_path, tiny_trees):
    data = tiny_trees.cub(tmp_path)
    kw = dict(root=str(data), image_size=16, batch_size=4)
    on_device, in_worker = CUBDataModule(**kw, normalize_on_device=True), CUBDataModule(**kw)
    torch.manual_seed(0)
    raw = next(iter(on_device.train_dataloader()))
    torch.manual_seed(0)
    reference = next(iter(in_worker.train_dataloader()))
    assert raw[0].dtype == torch.uint8 and raw[0].shape == (4, 3, 16, 16)
    done = on_device.on_after_batch_transfer(raw, 0)
    assert done[0].dtype == torch.float32 and torch.allclose(done[0], reference[0], atol=1e-5)
    assert torch.equal(done[1], reference[1]) and torch.equal(done[2], reference[2])
    assert on_device.splits.test[0][0].dtype == torch.float32  # evaluate / feature cache read floats


def test_lightning_calls_the_normalisation_hook(tmp_path, tiny_trees):
    import lightning as L

    seen = []

    class Probe(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, batch_idx):
            seen.append(batch[0].dtype)
            return (self.w * batch[0].mean()).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = CUBDataModule(root=str(tiny_trees.cub(tmp_path)), image_size=16, batch_size=4, normalize_on_device=True)
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(Probe(), datamodule=dm)
    assert seen == [torch.float32]
