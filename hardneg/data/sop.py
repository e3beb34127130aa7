"""Stanford Online Products, read from the released Stanford_Online_Products/ directory unchanged.

Ebay_train.txt and Ebay_test.txt, each a header ``image_id class_id super_class_id path`` then one
row per image, paths relative to the directory. The released files are the zero-shot split
(11,318 train / 11,316 test products, 59,551 / 60,502 images); the files' own counts are used,
and differing ones are warned about (benchmark.py). A product listed in both files would break the
zero-shot split (test classes seen in training): an error.
"""
from __future__ import annotations

from pathlib import Path

from hardneg.data.benchmark import ImageBenchmarkDataModule, ImageRecords

HEADER = ["image_id", "class_id", "super_class_id", "path"]


class SOPDataModule(ImageBenchmarkDataModule):
    name = "sop"
    title = "Stanford Online Products"
    protocol = "loo"
    expected_dirname = "Stanford_Online_Products/"
    markers = ("Ebay_train.txt", "Ebay_test.txt", "Ebay_info.txt")
    expected_files = "Ebay_train.txt, Ebay_test.txt and the image folders they list (bicycle_final/, ...)"
    released_rows = {"Ebay_train.txt": 59551, "Ebay_test.txt": 60502}
    released_classes = {"Ebay_train.txt": 11318, "Ebay_test.txt": 11316}

    def _read_split(self, path: Path) -> ImageRecords:
        self.require(path)
        with path.open(encoding="utf-8", errors="replace") as f:
            header = f.readline().split()
        if header != HEADER:
            raise self.annotation_error(path, f"starts with {header}, expected the header {' '.join(HEADER)}")
        records = ImageRecords([], [])
        for number, (_, class_id, _, relative) in self.read_rows(path, len(HEADER), skip=1):
            records.paths.append(path.parent / relative)
            cid = self.parse_int(path, number, class_id)
            if cid < 1:
                raise self.annotation_error(path, f"line {number}: class id {cid} is out of range (ids start at 1)")
            records.class_ids.append(cid)
        self.check_released_count(path, len(set(records.class_ids)), expected=self.released_classes[path.name], what="products")
        return records

    def read_records(self, data_dir: Path) -> tuple[ImageRecords, ImageRecords]:
        train_txt, test_txt = data_dir / "Ebay_train.txt", data_dir / "Ebay_test.txt"
        train, test = self._read_split(train_txt), self._read_split(test_txt)
        shared = sorted(set(train.class_ids) & set(test.class_ids))
        if shared:
            raise self.annotation_error(
                test_txt, f"{len(shared)} product ids also appear in {train_txt.name} (e.g. {shared[:3]}); the released "
                f"split keeps training and test products apart"
            )
        return train, test
