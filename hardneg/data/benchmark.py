"""The shared part of the on-disk benchmarks (CUB, Cars, SOP, In-Shop, Hotels-50K).

A benchmark subclass only parses its released annotation files into ``ImageRecords``; this base
finds the dataset directory, checks that every listed image exists, maps class ids to labels
0..n-1 per split, builds the transforms, and turns every problem into a ``UserError`` that says
which file was expected where and how to get it.

Where the data is: ``data.root``; when null, ``$HARDNEG_DATA/<name>``, or ``~/data/<name>`` when
HARDNEG_DATA is unset. The root may be the dataset directory itself, the directory that holds it
(as after extracting an archive into the root), or one level inside it (e.g. ``.../images``), as
long as exactly one candidate matches.

Annotations are parsed strictly, because a damaged file otherwise trains on wrong data with exit
code 0: a row with missing fields, a non-integer id, ids that disagree between files or a class id
out of range is an error; a row count that differs from the official release (``released_rows``)
is a ``DatasetSizeWarning`` naming both counts (subsets made on purpose stay usable); a file whose
last line has no final newline *and* whose count differs from the release was cut mid-line, so
its last row cannot be trusted: an error.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hardneg.data import preresize
from hardneg.data.base import RetrievalDataModule, RetrievalSplits
from hardneg.data.fast_images import PIPELINES, FastPaperTransform
from hardneg.data.images import ImageListDataset, check_on_corrupt
from hardneg.data.locations import default_root  # noqa: F401 (re-exported: its historical home)
from hardneg.data.transforms import DATASET_STATS, build_transform
from hardneg.errors import ConfigError, DatasetNotFoundError, UserError

USE_PRERESIZED = ("auto", True, False)


@dataclass
class ImageRecords:
    """One split as listed by the annotations: image paths and the dataset's own class ids."""

    paths: list
    class_ids: list
    bboxes: list | None = None  # (left, top, right, bottom) in pixels
    is_query: list | None = None  # query-gallery protocols only


class DatasetSizeWarning(UserWarning):
    """An annotation file lists a different number of rows than the released dataset."""


class ImageBenchmarkDataModule(RetrievalDataModule):
    title = "dataset"  # the name people know it by, for messages
    expected_dirname = ""  # the directory the official archive unpacks to
    markers: tuple[str, ...] = ()  # relative paths; any one present marks the dataset directory
    expected_files = ""  # what the directory must hold, for messages
    released_rows: dict[str, int] = {}  # annotation file name -> its row count in the official release

    def __init__(
        self,
        root: str | None = None,
        image_size: int = 256,
        transform: str = "paper",
        mean=None,
        std=None,
        timm_model: str | None = None,
        on_corrupt: str = "skip",
        pipeline: str = "fast",
        use_preresized="auto",
        preresized_dir: str | None = None,
        normalize_on_device: bool = False,
        **base,
    ):
        super().__init__(**base)
        if pipeline not in PIPELINES:
            raise ConfigError(f"data.pipeline={pipeline!r} is unknown; choose one of {list(PIPELINES)}")
        if use_preresized not in USE_PRERESIZED:
            raise ConfigError(f"data.use_preresized={use_preresized!r} is unknown; choose one of {list(USE_PRERESIZED)}")
        self.pipeline, self.use_preresized = pipeline, use_preresized
        self.normalize_on_device = bool(normalize_on_device)
        self.preresized_dir = Path(preresized_dir).expanduser() if preresized_dir else default_root(self.name).parent / "preresized"
        self.image_size = int(image_size)
        self.root = Path(root).expanduser() if root else default_root(self.name)
        self.on_corrupt = check_on_corrupt(on_corrupt)
        default_mean, default_std = DATASET_STATS[self.name]
        self.mean = tuple(float(m) for m in (default_mean if mean is None else mean))
        self.std = tuple(float(s) for s in (default_std if std is None else std))
        # Built now so that a bad transform setting fails at start, before any data is read.
        options = dict(image_size=image_size, mean=self.mean, std=self.std, timm_model=timm_model)
        self.train_transform = build_transform(transform, train=True, **options)
        self.eval_transform = build_transform(transform, train=False, **options)
        if pipeline == "fast" and transform == "paper":  # timm's transforms always take the reference path
            self.train_transform = FastPaperTransform(image_size, self.mean, self.std, train=True)
            self.eval_transform = FastPaperTransform(image_size, self.mean, self.std, train=False)
        self._dataset_dir: Path | None = None
        self._fingerprint: str | None = None

    # -- what subclasses provide -------------------------------------------------------
    def read_records(self, data_dir: Path) -> tuple[ImageRecords, ImageRecords]:
        """(train, test) records parsed from the annotation files under ``data_dir``."""
        raise NotImplementedError

    # -- messages ----------------------------------------------------------------------
    def how_to_get(self) -> str:
        return (
            f"Get it with: python -m hardneg.data.download {self.name} --root {self.root}\n"
            f"The location is data.root (default: $HARDNEG_DATA/{self.name}, or ~/data/{self.name} "
            f"when HARDNEG_DATA is unset)."
        )

    def not_found(self, detail: str) -> DatasetNotFoundError:
        return DatasetNotFoundError(
            f"{self.title} not found: {detail}.\n"
            f"Expected {self.expected_dirname} (data.root may name it or the directory that contains it) "
            f"holding {self.expected_files}.\n{self.how_to_get()}"
        )

    def annotation_error(self, path: Path, detail: str) -> UserError:
        return UserError(
            f"{self.title}: {path}: {detail}. The file looks truncated or is not the released format; "
            f"replace it with the original (re-extract the archive).\n{self.how_to_get()}"
        )

    def require(self, path: Path) -> Path:
        if not path.exists():
            raise self.not_found(f"{path} is missing")
        return path

    # -- where the data is ---------------------------------------------------------------
    def _is_dataset_dir(self, path: Path) -> bool:
        return any((path / marker).exists() for marker in self.markers)

    def dataset_dir(self) -> Path:
        if self._dataset_dir is None:
            self._dataset_dir = self._resolve_dataset_dir()
        return self._dataset_dir

    def _resolve_dataset_dir(self) -> Path:
        root = self.root
        if not root.is_dir():
            raise self.not_found(f"data.root={root} does not exist" if not root.exists() else f"{root} is not a directory")
        if self._is_dataset_dir(root):
            return root
        try:
            children = sorted(Path(e.path) for e in os.scandir(root) if e.is_dir() and self._is_dataset_dir(Path(e.path)))
        except OSError as exc:
            raise self.not_found(f"cannot list {root}: {exc}") from exc
        if len(children) > 1:
            raise DatasetNotFoundError(
                f"{self.title}: data.root={root} holds several candidate directories: "
                f"{', '.join(str(c) for c in children)}; set data.root to the one to use"
            )
        if children:
            return children[0]
        if self._is_dataset_dir(root.parent):  # pointed one level too deep, e.g. at images/
            return root.parent
        raise self.not_found(f"neither {root}, its subdirectories nor its parent hold any of {', '.join(self.markers)}")

    # -- reading helpers for subclasses ---------------------------------------------------
    def read_rows(self, path: Path, fields: int, skip: int = 0) -> list[tuple[int, list[str]]]:
        """(line number, fields) of a whitespace-separated file; the last field may hold spaces."""
        self.require(path)
        try:
            text = path.read_text(encoding="utf-8")
            lines = text.splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise self.annotation_error(path, f"cannot be read ({exc})") from exc
        rows = []
        unterminated = bool(lines) and not text.endswith(("\n", "\r"))
        for number, line in enumerate(lines[skip:], start=skip + 1):
            if not line.strip():
                continue
            parts = line.split(maxsplit=fields - 1)
            if len(parts) != fields:
                raise self.annotation_error(path, f"line {number} has {len(parts)} fields, expected {fields}: {line!r}")
            rows.append((number, parts))
        if not rows:
            raise self.annotation_error(path, "lists no images" if skip else "is empty")
        self.check_released_count(path, len(rows), last_line=lines[-1] if unterminated else None)
        return rows

    def check_released_count(self, path: Path, found: int, last_line: str | None = None,
                             expected: int | None = None, what: str = "rows") -> None:
        """Warn when ``found`` differs from the release; ``last_line`` is given when the file has no
        final newline: with a count that differs too, the file was cut mid-line, an error."""
        expected = self.released_rows.get(path.name) if expected is None else expected
        if found == expected:
            return
        if last_line is not None:
            released = f"the released file has {expected}" if expected is not None else "the released file ends with a newline"
            raise self.annotation_error(
                path, f"its last line {last_line!r} has no final newline and the file lists {found} {what} "
                f"({released}): it was cut short mid-line, so its last row cannot be trusted"
            )
        if expected is not None:
            warnings.warn(
                f"{self.title}: {path} lists {found} {what} but the released dataset has {expected}; "
                f"if this subset is not on purpose, the file is damaged: re-extract the archive",
                DatasetSizeWarning,
                stacklevel=3,
            )

    def parse_int(self, path: Path, number: int, value: str) -> int:
        try:
            return int(value)
        except ValueError:
            raise self.annotation_error(path, f"line {number}: {value!r} is not an integer") from None

    # -- RetrievalDataModule --------------------------------------------------------------
    def _check_images_exist(self, records: ImageRecords, split: str) -> None:
        missing = [p for p in records.paths if not os.path.isfile(p)]
        if missing:
            examples = ", ".join(str(p) for p in missing[:3])
            raise self.not_found(
                f"{split} images listed in the annotations but absent: {len(missing)} of {len(records.paths)} "
                f"(e.g. {examples}); the images archive was not (fully) extracted there"
            )

    def _dataset(self, records: ImageRecords, split: str, transform) -> ImageListDataset:
        if not records.paths:
            raise UserError(f"{self.title}: the annotations under {self.dataset_dir()} list no {split} images")
        self._check_images_exist(records, split)
        # Labels 0..n-1 per split, in the order of the dataset's own class ids.
        _, labels = np.unique(np.asarray(records.class_ids), return_inverse=True)
        return ImageListDataset(
            records.paths, labels.reshape(-1), bboxes=records.bboxes, transform=transform,
            on_corrupt=self.on_corrupt, is_query=records.is_query,
        )

    # -- uint8 batches, normalised on the device (data.normalize_on_device=true, fast pipeline) ------
    def loader_dataset(self, dataset):
        """With normalize_on_device, this datamodule's loaders yield uint8 images; other readers of
        the datasets (hardneg.evaluate, the feature cache) still get normalised float tensors."""
        transform = getattr(dataset, "transform", None)
        if self.normalize_on_device and isinstance(transform, FastPaperTransform) and hasattr(dataset, "with_transform"):
            return dataset.with_transform(transform.as_uint8())
        return dataset

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Lightning calls this once the batch is on the device: normalise uint8 images there."""
        x = batch[0]
        if isinstance(x, torch.Tensor) and x.dtype == torch.uint8 and isinstance(self.eval_transform, FastPaperTransform):
            batch = type(batch)([self.eval_transform.normalise_batch(x), *batch[1:]])
        return batch

    def preresized_copy_dir(self, bbox: bool) -> Path:
        return preresize.copy_dir(self.preresized_dir, self.name, self.dataset_dir(), self.image_size, bbox)

    def _preresized(self, train: ImageRecords, test: ImageRecords) -> tuple[ImageRecords, ImageRecords]:
        """The records pointed at the pre-resized copy (preresize.py) when one is complete."""
        if self.use_preresized is False:
            return train, test
        copy = self.preresized_copy_dir(train.bboxes is not None)
        if not preresize.is_complete(copy):
            if self.use_preresized is True:
                raise UserError(
                    f"{self.title}: data.use_preresized=true but {copy} is not a complete pre-resized copy. Make it "
                    f"once with: python -m hardneg.data.preresize data={self.name} data.root={self.root} "
                    f"data.image_size={self.image_size} (or set data.use_preresized=auto)"
                )
            return train, test
        data_dir = self.dataset_dir()
        for records in (train, test):
            records.paths = [copy / Path(p).relative_to(data_dir) for p in records.paths]
            records.bboxes = None  # the copy holds the crops already
        return train, test

    def build_splits(self) -> RetrievalSplits:
        train, test = self._preresized(*self.read_records(self.dataset_dir()))
        if self.protocol == "query_gallery" and test.is_query is None:
            raise AssertionError(f"{type(self).__name__} must mark queries in its test records")
        splits = RetrievalSplits(
            self._dataset(train, "train", self.train_transform),
            self._dataset(test, "test", self.eval_transform),
        )
        self._fingerprint = self._digest(splits)
        return splits

    def _digest(self, splits: RetrievalSplits) -> str:
        """Hash of everything the eval-transformed images of both splits depend on."""
        digest = hashlib.sha1(repr((type(self).__name__, str(self.dataset_dir()), repr(self.eval_transform))).encode())
        for dataset in (splits.train, splits.test):
            for part in (dataset.paths, dataset.labels.numpy(), dataset.bboxes, getattr(dataset, "is_query", None)):
                digest.update(b"|" if part is None else np.ascontiguousarray(np.asarray(part)).tobytes())
        return f"{self.name}-{digest.hexdigest()[:12]}"

    def fingerprint(self) -> str:
        # Computed when the splits are built, so it still holds after use_features() swaps them.
        self.setup()
        return self._fingerprint
