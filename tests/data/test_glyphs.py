"""The embedded glyph dataset: distinct classes, class-disjoint split, determinism."""
import numpy as np
import pytest
import torch

from hardneg.data.glyph_render import (
    REFERENCE_FONT,
    candidate_characters,
    distinct_characters,
    font_draws,
    font_files,
    matplotlib_font_dir,
    normalised_shape,
    shape_distance,
)
from hardneg.data.glyphs import GlyphsDataModule

REF = matplotlib_font_dir() / REFERENCE_FONT


@pytest.fixture(scope="module")
def kept():
    return distinct_characters(candidate_characters(), REF)


def test_at_least_100_distinct_classes_drawn_by_15_fonts(kept):
    fonts = font_files()
    drawn = [c for c in kept if sum(font_draws(c, f) for f in fonts) >= 15]
    assert len(drawn) >= 100


@pytest.mark.parametrize("a, b", [("A", "\u0391"), ("A", "\u0410"), ("o", "O"), ("0", "O"), ("l", "I"), ("c", "C"), ("\u03bf", "O")])
def test_homoglyphs_are_merged(kept, a, b):
    assert not (a in kept and b in kept), f"{a!r} and {b!r} both kept"
    assert shape_distance(normalised_shape(a, REF), normalised_shape(b, REF)) < 0.2


def test_kept_classes_differ_clearly(kept):
    shapes = [normalised_shape(c, REF) for c in kept]
    closest = min(shape_distance(shapes[i], shapes[j]) for i in range(len(shapes)) for j in range(i))
    assert closest >= 0.2


def test_tex_encoded_fonts_only_draw_ascii_alphanumerics():
    cmr = matplotlib_font_dir() / "cmr10.ttf"
    assert font_draws("A", cmr) and not font_draws("\u00a7", cmr)  # cmr10 draws Sigma at the code point of §


@pytest.fixture(scope="module")
def small():
    dm = GlyphsDataModule(max_classes=10, image_size=32, images_per_font=1, batch_size=8)
    dm.setup()
    return dm


def test_split_is_class_disjoint_with_contiguous_labels(small):
    train, test = small.splits.train, small.splits.test
    assert set(small.class_names["train"]).isdisjoint(small.class_names["test"])
    for split in (train, test):
        assert torch.equal(split.labels.unique(), torch.arange(5))
        assert torch.bincount(split.labels).min() >= 15  # one image per font, >= 15 fonts
    x, label, index = test[3]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and index == 3
    assert -1.0 <= x.min() and x.max() <= 1.0  # normalised with mean = std = 0.5


def test_rendering_is_deterministic_for_a_seed(small):
    again = GlyphsDataModule(max_classes=10, image_size=32, images_per_font=1, batch_size=8)
    again.setup()
    assert torch.equal(again.splits.test.inputs, small.splits.test.inputs)
    other = GlyphsDataModule(max_classes=10, image_size=32, images_per_font=1, batch_size=8, seed=1)
    assert other.fingerprint() != small.fingerprint()


def test_images_vary_within_a_class(small):
    imgs = small.splits.train.inputs[small.splits.train.labels == 0].float()
    assert (imgs[0] - imgs[1]).abs().mean() > 10  # different fonts, sizes, colours


def test_train_loader_gives_balanced_batches(small):
    batch = next(iter(small.train_dataloader()))
    x, labels, _ = batch
    assert x.shape[0] == 8 and set(np.bincount(labels.numpy())[np.bincount(labels.numpy()) > 0]) == {2}
