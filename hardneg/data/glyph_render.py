"""Rendering characters from the fonts that ship with matplotlib (no download).

Kept apart from the datamodule: this file knows fonts and pixels, not Lightning.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

REFERENCE_FONT = "DejaVuSans.ttf"
# LastResort draws the same placeholder box for every character; the STIX size variants,
# cmex10 and cmsy10 hold math symbols under letter code points.
_EXCLUDED_FONTS = ("LastResort", "STIXSiz", "cmex10", "cmsy10")
# The BaKoMa Computer Modern fonts use TeX encodings: outside ASCII letters and digits their
# cmap draws other symbols (cmr10 maps "§" to Sigma), so they only serve those.
_TEX_ENCODED_PREFIX = "cm"


def matplotlib_font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def font_files(extra_dirs: tuple[str, ...] = ()) -> list[Path]:
    """Matplotlib's bundled fonts (plus any .ttf/.otf under ``extra_dirs``), sorted by name."""
    files = sorted(matplotlib_font_dir().glob("*.ttf"))
    for d in extra_dirs:
        files += sorted(Path(d).expanduser().rglob("*.[ot]tf"))
    return [f for f in files if not f.name.startswith(_EXCLUDED_FONTS)]


@functools.cache
def font_codepoints(path: Path) -> frozenset[int]:
    """Code points a font maps to a real glyph (its cmap)."""
    from fontTools.ttLib import TTFont

    with TTFont(str(path), lazy=True) as font:
        cmap = font.getBestCmap() or {}
    return frozenset(cp for cp, name in cmap.items() if name not in (".notdef", "space"))


@functools.cache
def font_draws(char: str, path: Path) -> bool:
    """Whether ``path`` draws ``char`` as itself: mapped, correctly encoded, and not blank."""
    if ord(char) not in font_codepoints(path):
        return False
    if path.name.startswith(_TEX_ENCODED_PREFIX) and not (char.isascii() and char.isalnum()):
        return False
    return render_mask(char, path, 24).size > 0


def candidate_characters() -> list[str]:
    """Latin, digits, Greek and Cyrillic letters: the pool classes are drawn from."""
    ranges = [("A", "Z"), ("a", "z"), ("0", "9"), ("\u0391", "\u03a9"), ("\u03b1", "\u03c9"), ("\u0410", "\u044f")]
    chars = [chr(c) for lo, hi in ranges for c in range(ord(lo), ord(hi) + 1)]
    chars += list("&@#%$?§¶ßæœøþðŋ")
    return [c for c in chars if c not in ("\u03a2", "\u03c2")]  # unassigned / final sigma


def render_mask(char: str, font_path: Path, size: int) -> np.ndarray:
    """Ink coverage in [0, 1] of ``char`` drawn at ``size`` px, cropped to its ink box."""
    font = ImageFont.truetype(str(font_path), size)
    canvas = Image.new("L", (size * 3, size * 3), 0)
    ImageDraw.Draw(canvas).text((size, size), char, fill=255, font=font)
    box = canvas.getbbox()
    if box is None:
        return np.zeros((0, 0), np.float32)
    return np.asarray(canvas.crop(box), np.float32) / 255.0


def normalised_shape(char: str, font_path: Path, side: int = 24) -> np.ndarray:
    """The glyph's ink box stretched to a ``side`` x ``side`` square and slightly blurred.

    Size and aspect are removed on purpose: the dataset draws glyphs at random sizes, so
    ``c`` / ``C`` or ``o`` / ``O`` / ``0`` are indistinguishable there and count as homoglyphs;
    the blur forgives the small stroke differences between look-alikes.
    """
    mask = render_mask(char, font_path, 96)
    if mask.size == 0:
        return np.zeros((side, side), np.float32)
    image = Image.fromarray((mask * 255).astype(np.uint8)).resize((side, side), Image.BILINEAR)
    return np.asarray(image.filter(ImageFilter.GaussianBlur(1)), np.float32) / 255.0


def shape_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Soft Jaccard distance of two ink maps: 0 identical, 1 no overlap."""
    return float(1.0 - np.minimum(a, b).sum() / max(np.maximum(a, b).sum(), 1e-12))


def distinct_characters(chars: list[str], font_path: Path, min_distance: float = 0.2) -> list[str]:
    """Greedy homoglyph removal: keep a character only if its reference rendering is at
    least ``min_distance`` away from every character already kept (in candidate order, so
    Latin wins over the Greek and Cyrillic look-alikes that follow it).

    At 0.2 every merge is a true look-alike (c~C, l~I, 0~O, Greek Alpha~A, Cyrillic o~O, ...).
    """
    kept, shapes = [], []
    for c in chars:
        shape = normalised_shape(c, font_path)
        if shape.max() == 0:
            continue
        if all(shape_distance(shape, s) >= min_distance for s in shapes):
            kept.append(c)
            shapes.append(shape)
    return kept


def render_glyph(char: str, font_path: Path, image_size: int, rng: np.random.Generator) -> np.ndarray:
    """One RGB image [H, W, 3] uint8: random size, offset, rotation, ink and paper colour."""
    size = int(image_size * rng.uniform(0.45, 0.8))
    mask = render_mask(char, font_path, size)
    glyph = Image.fromarray((mask * 255).astype(np.uint8))
    glyph = glyph.rotate(rng.uniform(-20, 20), resample=Image.BILINEAR, expand=True)
    if max(glyph.size) > image_size:  # rotation can grow the box past the canvas
        glyph.thumbnail((image_size, image_size))
    alpha = Image.new("L", (image_size, image_size), 0)
    x = int(rng.integers(0, image_size - glyph.size[0] + 1))
    y = int(rng.integers(0, image_size - glyph.size[1] + 1))
    alpha.paste(glyph, (x, y))
    paper, ink = _contrasting_colours(rng)
    a = np.asarray(alpha, np.float32)[..., None] / 255.0
    return (paper * (1 - a) + ink * a).round().astype(np.uint8)


def _contrasting_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random paper and ink colours whose brightness differs clearly (the glyph stays legible)."""
    while True:
        paper, ink = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        if abs(paper.mean() - ink.mean()) > 80:
            return paper, ink
