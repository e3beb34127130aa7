"""The embedded dataset: characters rendered from the fonts that ship with matplotlib.

Class = character, image = one font at a random size, offset, rotation and colour.
Homoglyphs are dropped (see ``glyph_render.distinct_characters``): identical images under
two labels would turn hardest-negative mining into label noise. The split is class-disjoint
like CUB: half of the classes train, the other half are retrieved at test time.
Needs no download; about 4,000 images at 64 px render in a few seconds.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch

from hardneg.data.base import RetrievalDataModule, RetrievalSplits, TensorRetrievalDataset
from hardneg.data.glyph_render import (
    REFERENCE_FONT,
    candidate_characters,
    distinct_characters,
    font_draws,
    font_files,
    matplotlib_font_dir,
    render_glyph,
)


class Normalize:
    """uint8 [3, H, W] -> float, (x/255 - mean) / std. A class, not a lambda: workers pickle it."""

    def __init__(self, mean, std):
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() / 255.0 - self.mean) / self.std


class GlyphsDataModule(RetrievalDataModule):
    name = "glyphs"
    protocol = "loo"

    def __init__(
        self,
        image_size: int = 64,
        images_per_font: int = 2,
        min_fonts: int = 15,
        min_distance: float = 0.2,
        max_classes: int | None = None,
        extra_font_dirs: tuple[str, ...] = (),
        split_seed: int = 0,
        mean: tuple[float, ...] = (0.5, 0.5, 0.5),
        std: tuple[float, ...] = (0.5, 0.5, 0.5),
        **base,
    ):
        super().__init__(**base)
        self.image_size, self.images_per_font = image_size, images_per_font
        self.min_fonts, self.min_distance, self.max_classes = min_fonts, min_distance, max_classes
        self.extra_font_dirs, self.split_seed = tuple(extra_font_dirs), split_seed
        self.mean, self.std = tuple(mean), tuple(std)

    def classes(self) -> list[tuple[str, list]]:
        """(character, fonts that draw it) for every kept class, in split order."""
        if getattr(self, "_classes", None) is None:
            self._classes = self._find_classes()
        return self._classes

    def _find_classes(self) -> list[tuple[str, list]]:
        fonts = font_files(self.extra_font_dirs)
        chars = distinct_characters(candidate_characters(), matplotlib_font_dir() / REFERENCE_FONT, self.min_distance)
        classes = []
        for c in chars:
            covering = [f for f in fonts if font_draws(c, f)]
            if len(covering) >= self.min_fonts:
                classes.append((c, covering))
        # A fixed shuffle, so train and test both mix scripts (Latin, Greek, Cyrillic, symbols).
        order = np.random.default_rng(self.split_seed).permutation(len(classes))
        classes = [classes[i] for i in order]
        return classes[: self.max_classes] if self.max_classes else classes

    def fingerprint(self) -> str:
        key = repr((
            self.image_size, self.images_per_font, self.min_fonts, self.min_distance, self.max_classes,
            self.extra_font_dirs, self.split_seed, self.seed, self.mean, self.std,
            [(c, [f.name for f in fonts]) for c, fonts in self.classes()],
        ))
        return "glyphs-" + hashlib.sha1(key.encode()).hexdigest()[:12]

    def _render(self, classes) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng(self.seed)
        images, labels = [], []
        for label, (char, fonts) in enumerate(classes):
            for font in fonts:
                for _ in range(self.images_per_font):
                    images.append(render_glyph(char, font, self.image_size, rng))
                    labels.append(label)
        pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
        return pixels, torch.tensor(labels)

    def build_splits(self) -> RetrievalSplits:
        classes = self.classes()
        if len(classes) < 4:
            raise ValueError(f"glyphs needs at least 4 classes, got {len(classes)} (data.max_classes too small?)")
        half = len(classes) // 2
        transform = Normalize(self.mean, self.std)
        train = TensorRetrievalDataset(*self._render(classes[:half]), transform=transform)
        test = TensorRetrievalDataset(*self._render(classes[half:]), transform=transform)
        self.class_names = {"train": [c for c, _ in classes[:half]], "test": [c for c, _ in classes[half:]]}
        return RetrievalSplits(train, test)
