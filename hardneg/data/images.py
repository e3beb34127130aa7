"""A dataset of image files on disk: items ``(tensor, label, index)`` like every hardneg dataset.

Corrupt or unreadable images are handled at *load* time, not by verifying every file at setup:
a full decode of SOP's 120k or Hotels-50K's 1M images would cost minutes on every start, and a
header check misses the usual failure (a truncated JPEG). With ``on_corrupt="skip"`` a bad file
is replaced by a uniform grey image (the same size after the transform) that keeps its label
and index, so indices, labels and batch shapes stay valid; a warning names the file and the
running count. Grey rather than another image of the same class: a same-class copy would hand
that query a free exact match and inflate recall. With ``on_corrupt="error"`` the first bad file
raises a ``UserError`` that names it.

The count of substituted images must reach ``results.json``, but DataLoader workers are separate
processes: each item's "was substituted" flag lives in a shared-memory byte tensor that every
worker writes and the main process reads (``corrupt_count()``), one byte per image.
"""
from __future__ import annotations

import copy
import warnings

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from hardneg.data.fast_images import FastPaperTransform
from hardneg.errors import ConfigError, UserError

ON_CORRUPT = ("skip", "error")
_SUBSTITUTE_SIZE = (64, 64)
_SUBSTITUTE_COLOUR = (128, 128, 128)


class CorruptImageWarning(UserWarning):
    """An image could not be decoded and was replaced by a grey substitute."""


def check_on_corrupt(value: str) -> str:
    if value not in ON_CORRUPT:
        raise ConfigError(f"data.on_corrupt={value!r} is unknown; choose one of {list(ON_CORRUPT)}")
    return value


class ImageListDataset(Dataset):
    """Images at ``paths`` with integer ``labels``; optional boxes ``(left, top, right, bottom)``
    in pixels crop each image before ``transform``; ``is_query`` marks queries (query-gallery)."""

    def __init__(self, paths, labels, bboxes=None, transform=None, on_corrupt: str = "skip", is_query=None):
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        if bboxes is not None and len(bboxes) != len(paths):
            raise ValueError(f"{len(paths)} paths but {len(bboxes)} boxes")
        # A numpy string array, not a list of str: DataLoader workers touching Python objects
        # copy them page by page (reference counts), which multiplies memory on 1M-image sets.
        self.paths = np.asarray([str(p) for p in paths])
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.bboxes = None if bboxes is None else np.asarray(bboxes, dtype=np.float64).reshape(-1, 4)
        self.transform = transform
        self.on_corrupt = check_on_corrupt(on_corrupt)
        if is_query is not None:
            self.is_query = torch.as_tensor(is_query, dtype=torch.bool)
        self.corrupt: set[str] = set()  # this process's substituted paths (warn once per file)
        # Shared with DataLoader workers (fork or spawn) so the main process sees every substitute.
        self.corrupt_flags = torch.zeros(len(self.labels), dtype=torch.uint8).share_memory_()

    def __len__(self) -> int:
        return len(self.labels)

    def with_transform(self, transform) -> ImageListDataset:
        """The same items under another transform (e.g. the train split with the eval transform)."""
        view = copy.copy(self)
        view.transform = transform
        return view

    def load(self, i: int) -> Image.Image:
        """The RGB image of item ``i``, cropped to its box; raises on an unreadable file."""
        with Image.open(str(self.paths[i])) as im:  # str: PIL would print a numpy str_ as np.str_(...)
            im = im.convert("RGB")  # convert() decodes fully, so a truncated file fails here
        if self.bboxes is not None:
            im = im.crop(_clamped_box(self.bboxes[i], im.size))
        return im

    def corrupt_count(self) -> int:
        """How many distinct images of this dataset were replaced by grey substitutes, in any process."""
        return int(self.corrupt_flags.sum())

    def corrupt_paths(self) -> list[str]:
        return [str(p) for p in self.paths[self.corrupt_flags.numpy().astype(bool)]]

    def _substitute(self, i: int, exc: Exception) -> Image.Image:
        self._record_corrupt(i, exc)
        return Image.new("RGB", _SUBSTITUTE_SIZE, _SUBSTITUTE_COLOUR)

    def _record_corrupt(self, i: int, exc: Exception) -> None:
        path = str(self.paths[i])  # a plain str: a numpy str_ would print as np.str_('...')
        if self.on_corrupt == "error":
            raise UserError(
                f"cannot read image {path}: {type(exc).__name__}: {exc}. Replace or delete the file "
                f"(re-extract the dataset), or set data.on_corrupt=skip to substitute a grey image"
            ) from exc
        self.corrupt_flags[i] = 1
        if path not in self.corrupt:
            self.corrupt.add(path)
            warnings.warn(
                f"corrupt image replaced by a grey image ({len(self.corrupt)} so far): {path} "
                f"({type(exc).__name__}: {exc}); set data.on_corrupt=error to stop instead",
                CorruptImageWarning,
                stacklevel=3,
            )

    def __getitem__(self, i: int):
        if isinstance(self.transform, FastPaperTransform):
            return self._fast_item(i), int(self.labels[i]), i
        try:
            image = self.load(i)
        except _UNREADABLE as exc:
            image = self._substitute(i, exc)
        x = self.transform(image) if self.transform is not None else image
        return x, int(self.labels[i]), i

    def _fast_item(self, i: int) -> torch.Tensor:
        """The fast pipeline (fast_images.py): decode from the path, box crop before the resize."""
        fast = self.transform
        try:
            with Image.open(str(self.paths[i])) as im:  # header only: the box needs the image size
                box = None if self.bboxes is None else _clamped_box(self.bboxes[i], im.size)
            decoded = fast.load(str(self.paths[i]), box)
        except (*_UNREADABLE, RuntimeError) as exc:  # RuntimeError: torchvision's decoder on a bad JPEG
            self._record_corrupt(i, exc)
            decoded = fast.substitute()
        return fast.normalise(fast.geometry(*decoded))


# OSError covers missing/truncated/unidentified files; PIL raises SyntaxError and ValueError for
# some malformed headers, and DecompressionBombError above ~179 MP, far beyond any benchmark
# image, so such a file is treated as corrupt too.
_UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def _clamped_box(box, size) -> tuple[int, int, int, int]:
    """A box clipped to the image, at least 1 pixel wide and high (annotations can overshoot)."""
    width, height = size
    left, top, right, bottom = (int(round(float(v))) for v in box)
    left, top = min(max(left, 0), width - 1), min(max(top, 0), height - 1)
    right, bottom = min(max(right, left + 1), width), min(max(bottom, top + 1), height)
    return left, top, right, bottom
