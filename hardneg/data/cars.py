"""Cars196 (Stanford Cars), read from either released layout unchanged.

- Metric-learning release: cars_annos.mat (``annotations`` with relative_im_path, bbox_x1..y2,
  class, test; ``class_names``) beside car_ims/.
- Classification devkit: cars_train/, cars_test/, devkit/cars_train_annos.mat, devkit/cars_meta.mat
  and cars_test_annos_withlabels.mat (in the root or devkit/; the devkit's own cars_test_annos.mat
  has no labels). Both halves are pooled, then split by class like the other layout.
Zero-shot split: the first half of the classes by class id train (1-98), the rest test (99-196);
the ``test`` flag of the annotations is the classification split and is ignored.
Boxes are 1-based inclusive pixel corners, hence the -1 on the left/top edge.
Release: 16,185 images of 196 classes; other counts are warned about (benchmark.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from hardneg.data.benchmark import ImageBenchmarkDataModule, ImageRecords

_BOX_FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2")
RELEASED_IMAGES, RELEASED_CLASSES = 16185, 196


class CarsDataModule(ImageBenchmarkDataModule):
    name = "cars"
    title = "Cars196"
    protocol = "loo"
    expected_dirname = "a directory"
    markers = ("cars_annos.mat", "car_ims", "devkit", "cars_train")
    expected_files = (
        "cars_annos.mat and car_ims/ (or the devkit layout: cars_train/, cars_test/, devkit/cars_train_annos.mat, "
        "devkit/cars_meta.mat, cars_test_annos_withlabels.mat)"
    )

    def __init__(self, use_bbox: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.use_bbox = bool(use_bbox)

    def _load_mat(self, path: Path, key: str, fields: tuple[str, ...]) -> dict[str, list]:
        """Field -> list of values of the struct array ``key`` (or of the cell array when no fields)."""
        from scipy.io import loadmat

        self.require(path)
        try:
            mat = loadmat(str(path), squeeze_me=True)
        except Exception as exc:  # scipy raises many types (ValueError, OSError, zlib.error) on damage
            raise self.annotation_error(path, f"cannot be read as a MATLAB file ({type(exc).__name__}: {exc})") from exc
        if key not in mat:
            raise self.annotation_error(path, f"has no variable {key!r} (found {sorted(k for k in mat if not k.startswith('__'))})")
        value = np.atleast_1d(mat[key])
        if not fields:
            return {key: [str(v) for v in value]}
        missing = [f for f in fields if value.dtype.names is None or f not in value.dtype.names]
        if missing:
            raise self.annotation_error(path, f"{key!r} lacks the fields {missing}")
        if len(value) == 0:
            raise self.annotation_error(path, f"{key!r} is empty")
        return {f: [np.asarray(v).item() if np.asarray(v).size == 1 else v for v in value[f]] for f in fields}

    def _released(self, data_dir: Path) -> tuple[list, list, list, int | None]:
        annos_path = data_dir / "cars_annos.mat"
        annos = self._load_mat(annos_path, "annotations", ("relative_im_path", "class", *_BOX_FIELDS))
        n_classes = len(self._load_mat(annos_path, "class_names", ())["class_names"])
        paths = [data_dir / str(p) for p in annos["relative_im_path"]]
        return paths, annos["class"], self._boxes(annos), n_classes

    def _devkit(self, data_dir: Path) -> tuple[list, list, list, int | None]:
        fields = ("fname", "class", *_BOX_FIELDS)
        train = self._load_mat(data_dir / "devkit" / "cars_train_annos.mat", "annotations", fields)
        test_path = next(
            (p for p in (data_dir / "cars_test_annos_withlabels.mat", data_dir / "devkit" / "cars_test_annos_withlabels.mat") if p.exists()),
            None,
        )
        if test_path is None:
            raise self.not_found(
                f"{data_dir / 'cars_test_annos_withlabels.mat'} is missing (the devkit layout needs the labelled "
                f"test annotations; devkit/cars_test_annos.mat has no classes)"
            )
        test = self._load_mat(test_path, "annotations", fields)
        meta = data_dir / "devkit" / "cars_meta.mat"
        n_classes = len(self._load_mat(meta, "class_names", ())["class_names"]) if meta.exists() else None
        paths = [data_dir / "cars_train" / str(f) for f in train["fname"]] + [data_dir / "cars_test" / str(f) for f in test["fname"]]
        return paths, train["class"] + test["class"], self._boxes(train) + self._boxes(test), n_classes

    @staticmethod
    def _boxes(annos: dict[str, list]) -> list[tuple[float, float, float, float]]:
        return [(x1 - 1.0, y1 - 1.0, float(x2), float(y2)) for x1, y1, x2, y2 in zip(*(annos[f] for f in _BOX_FIELDS))]

    def read_records(self, data_dir: Path) -> tuple[ImageRecords, ImageRecords]:
        if (data_dir / "cars_annos.mat").exists() or not (data_dir / "devkit").exists():
            source, (paths, classes, boxes, n_classes) = data_dir / "cars_annos.mat", self._released(data_dir)
        else:
            source, (paths, classes, boxes, n_classes) = data_dir / "devkit", self._devkit(data_dir)
        try:
            classes = [int(c) for c in classes]
        except (TypeError, ValueError):
            raise self.annotation_error(source, "holds a class that is not an integer") from None
        # The class universe: 1..len(class_names) when the names are there, else the ids seen.
        class_ids = list(range(1, n_classes + 1)) if n_classes else sorted(set(classes))
        self.check_released_count(source, len(paths), expected=RELEASED_IMAGES, what="images")
        self.check_released_count(source, len(class_ids), expected=RELEASED_CLASSES, what="classes")
        unknown = sorted(set(classes) - set(class_ids))
        if unknown:
            raise self.annotation_error(source, f"uses class ids {unknown[:5]} beyond its {len(class_ids)} class names")
        train_classes = set(class_ids[: len(class_ids) // 2])

        with_boxes = self.use_bbox
        train, test = ImageRecords([], [], [] if with_boxes else None), ImageRecords([], [], [] if with_boxes else None)
        for path, cls, box in zip(paths, classes, boxes):
            split = train if cls in train_classes else test
            split.paths.append(path)
            split.class_ids.append(cls)
            if with_boxes:
                split.bboxes.append(box)
        return train, test
