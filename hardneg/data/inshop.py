"""In-Shop Clothes Retrieval (DeepFashion), read from the released benchmark directory unchanged.

Eval/list_eval_partition.txt: line 1 the number of images, line 2 the header
``image_name item_id evaluation_status``, then whitespace-separated rows with status
train | query | gallery. Image names start with ``img/``; the images live under Img/ (as
released: Img/img.zip unpacked in Img/) or directly in the root.
Test protocol: queries against the gallery (``is_query``), not leave-one-out over both.
Release: 52,712 images (25,882 train, 14,218 query, 12,612 gallery), 3,997 train and 3,985 test
items; other counts are warned about, and an item in both train and test is an error.
"""
from __future__ import annotations

from pathlib import Path

from hardneg.data.benchmark import ImageBenchmarkDataModule, ImageRecords

PARTITION = Path("Eval") / "list_eval_partition.txt"
STATUSES = ("train", "query", "gallery")
RELEASED_STATUS_COUNTS = {"train": 25882, "query": 14218, "gallery": 12612}


class InShopDataModule(ImageBenchmarkDataModule):
    name = "inshop"
    title = "In-Shop Clothes Retrieval"
    protocol = "query_gallery"
    expected_dirname = "the benchmark directory"
    markers = (str(PARTITION), "Eval")
    expected_files = "Eval/list_eval_partition.txt and the images (Img/img/... or img/...)"
    released_rows = {PARTITION.name: 52712}

    def _image_dir(self, data_dir: Path, first_image: str) -> Path:
        """Img/ or the root, whichever holds the first listed image."""
        for candidate in (data_dir / "Img", data_dir):
            if (candidate / first_image).is_file():
                return candidate
        raise self.not_found(
            f"the listed image {first_image} is neither under {data_dir / 'Img'} nor under {data_dir}; "
            f"unpack Img/img.zip inside Img/"
        )

    def read_records(self, data_dir: Path) -> tuple[ImageRecords, ImageRecords]:
        path = self.require(data_dir / PARTITION)
        with path.open(encoding="utf-8", errors="replace") as f:
            count_line = f.readline().strip()
        count = self.parse_int(path, 1, count_line)
        rows = self.read_rows(path, 3, skip=2)
        if len(rows) != count:
            raise self.annotation_error(path, f"line 1 announces {count} images but {len(rows)} rows follow")
        bad = next(((n, p[2]) for n, p in rows if p[2] not in STATUSES), None)
        if bad:
            raise self.annotation_error(path, f"line {bad[0]}: status {bad[1]!r} is not one of {list(STATUSES)}")

        for status, expected in RELEASED_STATUS_COUNTS.items():
            found = sum(p[2] == status for _, p in rows)
            self.check_released_count(path, found, expected=expected, what=f"{status} rows")
        train_items = {p[1] for _, p in rows if p[2] == "train"}
        shared = sorted(train_items & {p[1] for _, p in rows if p[2] != "train"})
        if shared:
            raise self.annotation_error(path, f"{len(shared)} items are in both train and query/gallery (e.g. {shared[:3]})")

        image_dir = self._image_dir(data_dir, rows[0][1][0])
        train, test = ImageRecords([], []), ImageRecords([], [], is_query=[])
        for _, (image_name, item_id, status) in rows:
            split = train if status == "train" else test
            split.paths.append(image_dir / image_name)
            split.class_ids.append(item_id)
            if status != "train":
                test.is_query.append(status == "query")
        if not any(test.is_query) or all(test.is_query):
            raise self.annotation_error(path, "needs both query and gallery rows")
        return train, test
