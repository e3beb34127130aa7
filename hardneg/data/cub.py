"""CUB-200-2011, read from the released CUB_200_2011/ directory unchanged.

images.txt (``id path``), image_class_labels.txt (``id class``), classes.txt (``class name``),
images/, and bounding_boxes.txt (``id x y width height``) for the optional box crop.
Zero-shot split: the first half of the classes by class id train (1-100), the rest test
(101-200). train_test_split.txt is the *classification* split and is deliberately ignored.

Besides the generic checks (benchmark.py), every label is checked against the image's folder:
the released paths start with the class folder named in classes.txt (``200.Common_Yellowthroat/``),
so a label line cut short (``600 200`` -> ``600 2``) or edited is an error, not a silent move of
the image into another class and split.
"""
from __future__ import annotations

from pathlib import Path

from hardneg.data.benchmark import ImageBenchmarkDataModule, ImageRecords


class CUBDataModule(ImageBenchmarkDataModule):
    name = "cub"
    title = "CUB-200-2011"
    protocol = "loo"
    expected_dirname = "CUB_200_2011/"
    markers = ("images.txt", "image_class_labels.txt", "classes.txt")
    expected_files = "images.txt, image_class_labels.txt, classes.txt and images/ (bounding_boxes.txt for data.use_bbox=true)"
    released_rows = {"images.txt": 11788, "image_class_labels.txt": 11788, "bounding_boxes.txt": 11788, "classes.txt": 200}

    def __init__(self, use_bbox: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.use_bbox = bool(use_bbox)

    def _id_table(self, path: Path, fields: int, numeric: bool = False) -> dict[int, list]:
        """``id -> remaining fields`` (as numbers when ``numeric``); a repeated id means a damaged file."""
        table = {}
        for number, parts in self.read_rows(path, fields):
            key = self.parse_int(path, number, parts[0])
            if key in table:
                raise self.annotation_error(path, f"line {number} repeats id {key}")
            values = parts[1:]
            if numeric:
                try:
                    values = [float(v) for v in values]
                except ValueError:
                    raise self.annotation_error(path, f"line {number} holds a non-number: {parts}") from None
            table[key] = values
        return table

    def _same_ids(self, reference: Path, ref_ids, other: Path, other_ids) -> None:
        if ref_ids != other_ids:
            short, long_ = (other, reference) if len(other_ids) < len(ref_ids) else (reference, other)
            raise self.annotation_error(
                short, f"its image ids do not match {long_.name} ({len(ref_ids)} in {reference.name}, "
                f"{len(other_ids)} in {other.name})"
            )

    def _labels_match_folders(self, labels_txt: Path, class_of: dict, images: dict, classes: dict) -> None:
        """Each image's class must be the one its folder names (when folders are the class names)."""
        class_of_folder = {fields[0]: cid for cid, fields in classes.items()}
        for image_id, (relative,) in images.items():
            folder = relative.split("/", 1)[0]
            expected = class_of_folder.get(folder)
            if expected is not None and class_of[image_id] != expected:
                raise self.annotation_error(
                    labels_txt, f"image {image_id} has class {class_of[image_id]} but images.txt puts it in "
                    f"{folder}/, class {expected} in classes.txt (a line cut short or edited?)"
                )

    def read_records(self, data_dir: Path) -> tuple[ImageRecords, ImageRecords]:
        images_txt, labels_txt, classes_txt = (data_dir / f for f in ("images.txt", "image_class_labels.txt", "classes.txt"))
        images = self._id_table(images_txt, 2)
        labels = self._id_table(labels_txt, 2, numeric=True)
        classes = self._id_table(classes_txt, 2)
        self._same_ids(images_txt, images.keys(), labels_txt, labels.keys())
        boxes = None
        if self.use_bbox:
            boxes_txt = data_dir / "bounding_boxes.txt"
            boxes = self._id_table(boxes_txt, 5, numeric=True)
            self._same_ids(images_txt, images.keys(), boxes_txt, boxes.keys())

        class_of = {i: int(fields[0]) for i, fields in labels.items()}
        unknown = sorted(set(class_of.values()) - classes.keys())
        if unknown:
            raise self.annotation_error(classes_txt, f"lacks class ids {unknown[:5]} used in {labels_txt.name}")
        self._labels_match_folders(labels_txt, class_of, images, classes)
        class_ids = sorted(classes)
        train_classes = set(class_ids[: len(class_ids) // 2])

        train, test = ImageRecords([], [], [] if boxes else None), ImageRecords([], [], [] if boxes else None)
        for image_id in sorted(images):
            split = train if class_of[image_id] in train_classes else test
            split.paths.append(data_dir / "images" / images[image_id][0])
            split.class_ids.append(class_of[image_id])
            if boxes:
                x, y, w, h = boxes[image_id]
                split.bboxes.append((x, y, x + w, y + h))
        return train, test
