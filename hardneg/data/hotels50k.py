"""Hotels-50K, read from the layout of the official repository (GWUvision/Hotels-50K) unchanged.

Expected layout under the root (a clone of that repository, after its own download steps):
    input/dataset/hotel_info.csv   hotel_id, hotel_name, chain_id, latitude, longitude
    input/dataset/train_set.csv    image_id, hotel_id, image_url, image_source, upload_timestamp
    input/dataset/test_set.csv     same columns
    images/train/<chain_id>/<hotel_id>/<image_source>/<image_id>.<ext>           (download_train.py)
    images/test/unoccluded/<chain_id>/<hotel_id>/<image_source>/<image_id>.<ext>  (test.tar.gz)
``<ext>`` is the URL's last dot-suffix, as download_train.py names the files (then .jpg is tried).

Protocol (paper): instance retrieval by hotel (``label: chain`` retrieves the chain instead).
Train on the training images; at test time the queries are the test images and the gallery
is the training set. The training images are scraped from their URLs and some always fail,
so training images that are absent are left out with a warning; absent test images are an error.
"""
from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path

from hardneg.data.benchmark import ImageBenchmarkDataModule, ImageRecords
from hardneg.errors import ConfigError

META = Path("input") / "dataset"
LABELS = ("hotel", "chain")
OCCLUSIONS = ("unoccluded", "low_occlusions", "medium_occlusions", "high_occlusions")


class Hotels50KDataModule(ImageBenchmarkDataModule):
    name = "hotels50k"
    title = "Hotels-50K"
    protocol = "query_gallery"
    expected_dirname = "Hotels-50K/ (the official repository)"
    markers = (str(META), "images/train", "images/test")
    expected_files = (
        "input/dataset/{hotel_info,train_set,test_set}.csv (from input/dataset.tar.gz), images/train/ "
        "(from download_train.py) and images/test/unoccluded/ (from test.tar.gz)"
    )

    def __init__(self, label: str = "hotel", occlusion: str = "unoccluded", **kwargs):
        if label not in LABELS:
            raise ConfigError(f"data.label={label!r} is unknown; choose one of {list(LABELS)}")
        if occlusion not in OCCLUSIONS:
            raise ConfigError(f"data.occlusion={occlusion!r} is unknown; choose one of {list(OCCLUSIONS)}")
        super().__init__(**kwargs)
        self.label, self.occlusion = label, occlusion

    def _read_csv(self, path: Path, columns: tuple[str, ...], non_empty: tuple[str, ...] | None = None) -> list[dict[str, str]]:
        """Rows of a CSV that must hold ``columns``; a row missing one of ``non_empty`` (default: all)
        is a damaged file. (hotel_info.csv's chain_id may be blank for independent hotels.)"""
        if not path.exists():
            archive = path.parent.parent / "dataset.tar.gz"
            hint = f" (extract {archive} there first)" if archive.exists() else ""
            raise self.not_found(f"{path} is missing{hint}")
        with path.open(newline="", encoding="utf-8", errors="replace") as f:
            reader = csv.DictReader(f)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise self.annotation_error(path, f"its header {reader.fieldnames} lacks the columns {missing}")
            rows = list(reader)
        broken = next((n for n, row in enumerate(rows, start=2) if any(row[c] in (None, "") for c in non_empty or columns)), None)
        if broken:
            raise self.annotation_error(path, f"line {broken} is incomplete")
        if not rows:
            raise self.annotation_error(path, "lists no images")
        return rows

    @staticmethod
    def _find_image(folder: Path, image_id: str, url: str) -> Path | None:
        for ext in dict.fromkeys((url.split(".")[-1], "jpg", "jpeg", "png")):
            path = folder / f"{image_id}.{ext}"
            if os.path.isfile(path):
                return path
        return None

    def _records(self, rows, image_root: Path, chain_of: dict[str, str], csv_path: Path):
        records, absent = ImageRecords([], []), []
        for row in rows:
            hotel = row["hotel_id"]
            if hotel not in chain_of:
                raise self.annotation_error(csv_path, f"hotel {hotel} is not in hotel_info.csv")
            folder = image_root / chain_of[hotel] / hotel / row["image_source"]
            path = self._find_image(folder, row["image_id"], row["image_url"])
            if path is None:
                absent.append(folder / f"{row['image_id']}.jpg")
                continue
            records.paths.append(path)
            records.class_ids.append(chain_of[hotel] if self.label == "chain" else hotel)
        return records, absent

    def read_records(self, data_dir: Path) -> tuple[ImageRecords, ImageRecords]:
        meta = data_dir / META
        hotels = self._read_csv(meta / "hotel_info.csv", ("hotel_id", "chain_id"), non_empty=("hotel_id",))
        chain_of = {row["hotel_id"]: row["chain_id"] or "" for row in hotels}
        columns = ("image_id", "hotel_id", "image_url", "image_source")
        train_csv, test_csv = meta / "train_set.csv", meta / "test_set.csv"
        train_rows, test_rows = self._read_csv(train_csv, columns), self._read_csv(test_csv, columns)

        train, absent = self._records(train_rows, data_dir / "images" / "train", chain_of, train_csv)
        if not train.paths:
            raise self.not_found(f"none of the {len(train_rows)} training images is under {data_dir / 'images' / 'train'}; run download_train.py")
        if absent:
            warnings.warn(
                f"Hotels-50K: {len(absent)} of {len(train_rows)} training images listed in {train_csv.name} are not "
                f"under images/train (failed downloads, e.g. {absent[0]}); training and gallery use the other "
                f"{len(train.paths)}",
                stacklevel=2,
            )
        test_root = data_dir / "images" / "test" / self.occlusion
        queries, absent = self._records(test_rows, test_root, chain_of, test_csv)
        if absent:
            raise self.not_found(
                f"test images listed in {test_csv.name} but absent: {len(absent)} of {len(test_rows)} "
                f"(e.g. {absent[0]}); unpack test.tar.gz inside images/"
            )
        test = ImageRecords(
            queries.paths + train.paths, queries.class_ids + train.class_ids,
            is_query=[True] * len(queries.paths) + [False] * len(train.paths),
        )
        return train, test
