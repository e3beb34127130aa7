"""Stanford Online Products, read from the released Stanford_Online_Products/ directory unchanged.

Ebay_train.txt and Ebay_test.txt, each a header ``image_id class_id super_class_id path`` then one
row per image, paths relative to the directory. The released files are the zero-shot split
(11,318 train / 11,316 test products); counts are taken from the files, not assumed.
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

    def _read_split(self, path: Path) -> ImageRecords:
        self.require(path)
        with path.open(encoding="utf-8", errors="replace") as f:
            header = f.readline().split()
        if header != HEADER:
            raise self.annotation_error(path, f"starts with {header}, expected the header {' '.join(HEADER)}")
        records = ImageRecords([], [])
        for number, (_, class_id, _, relative) in self.read_rows(path, len(HEADER), skip=1):
            records.paths.append(path.parent / relative)
            records.class_ids.append(self.parse_int(path, number, class_id))
        return records

    def read_records(self, data_dir: Path) -> tuple[ImageRecords, ImageRecords]:
        return self._read_split(data_dir / "Ebay_train.txt"), self._read_split(data_dir / "Ebay_test.txt")
