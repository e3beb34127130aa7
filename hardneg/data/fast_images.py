"""The fast image pipeline (``data.pipeline=fast``): the paper's transforms, same pixels, less work.

The reference pipeline (transforms.paper_transform) decodes with PIL, resizes the whole image with
PIL, crops, then converts to float and normalises image by image. Per 500x375 JPEG at 256 px on one
core that is roughly decode 2 ms + PIL resize 2.5 ms + tensor/normalise 0.6 ms. This pipeline does
the same operations, in the same order and with the same random draws, but cheaper:

- **decode**: libjpeg-turbo through torchvision (same pixels as PIL's, it is the same library),
  or, when the image is at least 4x larger than needed, PIL's ``draft``: the JPEG is decoded at
  1/2, 1/4 or 1/8 scale in the DCT domain, keeping at least twice the size the resize needs;
- **resize**: torchvision's uint8 bilinear antialiased resize, the same filter as PIL's (PIL's
  algorithm) and about 5x faster; the output size is computed from the full-resolution size, so it
  is exactly the reference's even after a draft;
- **crop and flip** on the uint8 tensor, with the random draws of ``RandomCrop``/
  ``RandomHorizontalFlip`` (same calls on the torch RNG, same order): same seed, same crops;
- **normalise** last, once, as float: ``(x - 255 mean) / (255 std)``, per item or, with
  ``as_uint8()``, per batch on the device (``normalise_batch``).

Equivalence with the reference (tests/data/test_fast_images.py), in uint8 levels of the input
(1 level = 1/(255 std) ~ 0.014 after normalisation): without a draft the two differ only by the
rounding of the two resize implementations (measured: max 1 level, mean 0.001); with a draft by
the resampling noise of decoding at reduced scale (measured at 1/2 scale, 64 px: mean 1.0, 99th
percentile 9, max ~29 levels at sharp edges). The tests bound: no draft max <= 1, mean <= 0.01;
draft mean <= 1.5, 99th percentile <= 12. A draft only happens for images at least 4x the target
(for 256 px training, shorter side >= 1124 px), so at 256 px CUB/SOP/most Cars images never take it.
"""
from __future__ import annotations

import copy
import io
import warnings

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision import transforms as T
from torchvision.transforms.v2 import functional as F

PIPELINES = ("fast", "reference")
_DRAFT_SCALES = (8, 4, 2)
# A draft keeps at least twice the resize's target size, so the antialiased resize still does most
# of the filtering. Measured on photographs at 64 px from ~500 px: margin 2 (1/2-scale decode)
# differs from the reference by mean 1.0 / 99th percentile 9 uint8 levels; margin 1 (1/4 scale)
# by mean 2.3 / p99 20: the DCT-domain downscale blurs differently from PIL's triangle filter.
_DRAFT_MARGIN = 2
_GREY = 128

try:  # torchvision >= 0.29 warns that its decoders move to torchcodec; they still work
    from torchvision.io import ImageReadMode, decode_jpeg
except ImportError:  # pragma: no cover - a torchvision without image decoding: PIL decodes
    decode_jpeg = None


def resized_size(width: int, height: int, short: int) -> tuple[int, int]:
    """(height, width) after ``Resize(short)`` of a ``width x height`` image: torchvision's rule
    (shorter side to ``short``, the longer one truncated), for PIL and tensors alike."""
    if width <= height:
        return int(short * height / width), short
    return short, int(short * width / height)


ORIGINAL_SIZE_TAG = "hardneg-original-size"  # written into pre-resized copies (preresize.py)


def original_size_note(width: int, height: int) -> str:
    return f"{ORIGINAL_SIZE_TAG}={width}x{height}"


def _original_size(im: Image.Image) -> tuple[int, int] | None:
    """The size of the image a pre-resized copy was made from, from its JPEG comment / PNG text."""
    note = im.info.get("comment", b"") or im.info.get(ORIGINAL_SIZE_TAG, "")
    note = note.decode("latin-1") if isinstance(note, bytes) else str(note)
    if ORIGINAL_SIZE_TAG not in note:
        return None
    width, height = note.rsplit("=", 1)[-1].split("x")
    return int(width), int(height)


def _decode(data: bytes, box, min_short: int) -> tuple[Tensor, int, int]:
    """uint8 [3, H, W] of the image in ``data`` cropped to ``box`` (clamped integer pixels), and the
    crop's full-resolution width and height: those of the original for a pre-resized copy, so the
    output size is the reference's on the original. Decodes at reduced scale when the crop stays at
    least ``_DRAFT_MARGIN * min_short`` pixels on its shorter side. Raises on an unreadable file."""
    with Image.open(io.BytesIO(data)) as im:
        width, height = im.size
        left, top, right, bottom = box if box is not None else (0, 0, width, height)
        crop_w, crop_h = right - left, bottom - top
        original = _original_size(im) if box is None else None
        if original is not None:
            crop_w, crop_h = original
        jpeg = im.format == "JPEG" and im.mode in ("RGB", "L", "CMYK")
        shorter = min(right - left, bottom - top)  # of the file itself: what a draft can reduce
        scale = next((s for s in _DRAFT_SCALES if shorter // s >= _DRAFT_MARGIN * min_short), 1) if jpeg else 1
        if jpeg and scale == 1 and decode_jpeg is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                x = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
            return x[:, top:bottom, left:right], crop_w, crop_h
        if scale > 1:
            im.draft("RGB", (width // scale, height // scale))  # PIL picks the largest scale <= these ratios
        rgb = im.convert("RGB")  # decodes fully: a truncated file raises here
    x = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)
    if box is not None:
        sx, sy = rgb.width / width, rgb.height / height  # 1 without a draft
        x = x[:, round(top * sy) : max(round(bottom * sy), round(top * sy) + 1),
              round(left * sx) : max(round(right * sx), round(left * sx) + 1)]
    return x, crop_w, crop_h


class FastPaperTransform:
    """The paper transform from a file: ``__call__(path, box)`` -> normalised float [3, S, S].

    Train: Resize(int(1.1 S)) -> RandomCrop(S) -> horizontal flip; eval: Resize(S) -> CenterCrop(S),
    as paper_transform, whose random draws it repeats."""

    def __init__(self, image_size: int, mean, std, train: bool):
        self.size, self.train = int(image_size), bool(train)
        self.short = int(1.1 * self.size) if self.train else self.size
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self._shift = torch.tensor(self.mean).view(3, 1, 1) * 255
        self._scale = 1 / (torch.tensor(self.std).view(3, 1, 1) * 255)

    def __repr__(self) -> str:
        return f"FastPaperTransform(size={self.size}, train={self.train}, mean={self.mean}, std={self.std})"

    def load(self, path: str, box=None) -> tuple[Tensor, int, int]:
        with open(path, "rb") as f:
            data = f.read()
        return _decode(data, box, self.short)

    def substitute(self) -> tuple[Tensor, int, int]:
        """The grey image the reference substitutes for a corrupt file (64 x 64)."""
        return torch.full((3, 64, 64), _GREY, dtype=torch.uint8), 64, 64

    def geometry(self, x: Tensor, width: int, height: int) -> Tensor:
        """Resize to the reference's size (computed from the full-resolution ``width x height``),
        then crop (and flip) as the reference does; uint8 in, uint8 out."""
        size = resized_size(width, height, self.short)
        if tuple(x.shape[1:]) != size:  # a pre-resized copy is often at the size already (PIL copies too)
            x = F.resize(x, list(size), antialias=True)
        if not self.train:
            return F.center_crop(x, [self.size, self.size])
        i, j, h, w = T.RandomCrop.get_params(x, (self.size, self.size))
        x = x[:, i : i + h, j : j + w]
        if torch.rand(1) < 0.5:  # RandomHorizontalFlip's draw
            x = x.flip(-1)
        return x

    uint8_output = False  # True: items stay uint8; normalise_batch() runs later, on the device

    def as_uint8(self) -> FastPaperTransform:
        """The same transform returning uint8 [3, S, S] (4x less to pass from workers and to copy to
        the GPU); the batch is then normalised by ``normalise_batch``."""
        view = copy.copy(self)
        view.uint8_output = True
        return view

    def normalise(self, x: Tensor) -> Tensor:
        if self.uint8_output:
            return x.contiguous()
        # contiguous first: converting a strided crop to float directly took 2x as long
        return x.contiguous().float().sub_(self._shift).mul_(self._scale)

    def normalise_batch(self, x: Tensor) -> Tensor:
        """uint8 [B, 3, S, S] (on any device) -> the normalised float32 batch ``normalise`` gives."""
        shift, scale = self._shift.to(x.device), self._scale.to(x.device)
        return x.float().sub_(shift).mul_(scale)

    def __call__(self, path: str, box=None) -> Tensor:
        return self.normalise(self.geometry(*self.load(path, box)))
