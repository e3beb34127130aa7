"""Tiny copies of each benchmark in its released on-disk format, generated per test (nothing committed).

Every tree has a class with a single image in each split, so the tests can check it stays in
evaluation and never reaches a training batch.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_jpeg(path: Path, seed: int, size=(40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, "JPEG")


# Images per class, by class number (1-based). The first half of the classes train.
CUB_COUNTS = {1: 3, 2: 2, 3: 4, 4: 1, 5: 3, 6: 2, 7: 1, 8: 2}


def make_cub(base: Path, counts=CUB_COUNTS) -> Path:
    data = base / "CUB_200_2011"
    images, labels, boxes, split, classes = [], [], [], [], []
    image_id = 0
    for cid, n in counts.items():
        folder = f"{cid:03d}.Bird_{cid}"
        classes.append(f"{cid} {folder}")
        for k in range(n):
            image_id += 1
            rel = f"{folder}/Bird_{cid}_{k}.jpg"
            write_jpeg(data / "images" / rel, image_id)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {cid}")
            boxes.append(f"{image_id} 2.0 3.0 20.0 15.0")
            split.append(f"{image_id} {k % 2}")  # the classification split, to be ignored
    for name, lines in (("images", images), ("image_class_labels", labels), ("bounding_boxes", boxes),
                        ("train_test_split", split), ("classes", classes)):
        (data / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return data


CARS_COUNTS = {1: 3, 2: 2, 3: 1, 4: 2, 5: 3, 6: 1}


def _struct(rows: list[dict]):
    dtype = [(key, "O") for key in rows[0]]
    array = np.zeros((1, len(rows)), dtype=dtype)
    for i, row in enumerate(rows):
        array[0, i] = tuple(np.array([v]) if isinstance(v, str) else np.array([[v]], dtype=np.uint16) for v in row.values())
    return array


def _cell(values: list[str]):
    cell = np.empty((1, len(values)), dtype=object)
    cell[0, :] = values
    return cell


def make_cars(base: Path, counts=CARS_COUNTS) -> Path:
    from scipy.io import savemat

    base.mkdir(parents=True, exist_ok=True)
    rows, i = [], 0
    for cid, n in counts.items():
        for _ in range(n):
            i += 1
            rel = f"car_ims/{i:06d}.jpg"
            write_jpeg(base / rel, 100 + i)
            rows.append({"bbox_x1": 3, "bbox_y1": 4, "bbox_x2": 22, "bbox_y2": 18, "class": cid, "test": i % 2,
                         "relative_im_path": rel})
    savemat(base / "cars_annos.mat", {"annotations": _struct(rows), "class_names": _cell([f"Car {c}" for c in counts])})
    return base


def make_cars_devkit(base: Path, counts=CARS_COUNTS) -> Path:
    from scipy.io import savemat

    (base / "devkit").mkdir(parents=True, exist_ok=True)
    halves = {"train": [], "test": []}
    i = 0
    for cid, n in counts.items():
        for k in range(n):
            i += 1
            half = "train" if k % 2 == 0 else "test"  # classification halves mix all classes
            fname = f"{i:05d}.jpg"
            write_jpeg(base / f"cars_{half}" / fname, 200 + i)
            halves[half].append({"bbox_x1": 3, "bbox_y1": 4, "bbox_x2": 22, "bbox_y2": 18, "class": cid, "fname": fname})
    savemat(base / "devkit" / "cars_train_annos.mat", {"annotations": _struct(halves["train"])})
    savemat(base / "cars_test_annos_withlabels.mat", {"annotations": _struct(halves["test"])})
    savemat(base / "devkit" / "cars_meta.mat", {"class_names": _cell([f"Car {c}" for c in counts])})
    return base


SOP_TRAIN = {1: 3, 2: 2, 3: 1, 4: 2}
SOP_TEST = {5: 2, 6: 3, 7: 1}


def make_sop(base: Path) -> Path:
    data = base / "Stanford_Online_Products"
    image_id = 0
    for split, counts in (("train", SOP_TRAIN), ("test", SOP_TEST)):
        lines = ["image_id class_id super_class_id path"]
        for cid, n in counts.items():
            for k in range(n):
                image_id += 1
                rel = f"bicycle_final/{cid}_{k}.JPG"
                write_jpeg(data / rel, 300 + image_id)
                lines.append(f"{image_id} {cid} 1 {rel}")
        (data / f"Ebay_{split}.txt").write_text("\n".join(lines) + "\n")
    return data


# item -> (status, number of images); items 1-4 train, 5-8 test (query and gallery).
INSHOP_ITEMS = {1: [("train", 3)], 2: [("train", 2)], 3: [("train", 1)], 4: [("train", 2)],
                5: [("query", 1), ("gallery", 2)], 6: [("query", 2), ("gallery", 1)],
                7: [("gallery", 1)], 8: [("query", 1), ("gallery", 1)]}


def make_inshop(base: Path, images_under_img: bool = True) -> Path:
    rows = []
    for item, parts in INSHOP_ITEMS.items():
        k = 0
        for status, n in parts:
            for _ in range(n):
                k += 1
                name = f"img/MEN/Denim/id_{item:08d}/{k:02d}_1_front.jpg"
                write_jpeg((base / "Img" if images_under_img else base) / name, 400 + 10 * item + k)
                rows.append(f"{name}   id_{item:08d}   {status}")
    (base / "Eval").mkdir(parents=True, exist_ok=True)
    lines = [str(len(rows)), "image_name item_id evaluation_status", *rows]
    (base / "Eval" / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return base


# hotel -> (chain, train images, test images). Hotel 13 has one training image that failed to download.
HOTELS = {11: (1, 3, 1), 12: (1, 2, 2), 13: (2, 3, 1), 14: (2, 1, 0), 15: (3, 2, 1)}
HOTELS_ABSENT = ("13", "1003")  # (hotel, image id) listed in train_set.csv but never downloaded


def _csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def make_hotels(base: Path) -> Path:
    data = base / "Hotels-50K"
    meta = data / "input" / "dataset"
    header = ["image_id", "hotel_id", "image_url", "image_source", "upload_timestamp"]
    train, test, image_id = [], [], 0
    for hotel, (chain, n_train, n_test) in HOTELS.items():
        for _ in range(n_train):
            image_id += 1
            train.append([image_id, hotel, f"https://example.com/{image_id}.png", "travel_website", "2016-01-01"])
            write_jpeg(data / "images" / "train" / str(chain) / str(hotel) / "travel_website" / f"{image_id}.png", image_id)
        for _ in range(n_test):
            image_id += 1
            test.append([image_id, hotel, f"https://example.com/{image_id}.jpg", "traffickcam", "2017-01-01"])
            write_jpeg(data / "images" / "test" / "unoccluded" / str(chain) / str(hotel) / "traffickcam" / f"{image_id}.jpg", image_id)
    train.append([HOTELS_ABSENT[1], HOTELS_ABSENT[0], "https://example.com/dead.jpg", "travel_website", "2016-01-01"])
    _csv(meta / "train_set.csv", header, train)
    _csv(meta / "test_set.csv", header, test)
    _csv(meta / "hotel_info.csv", ["hotel_id", "hotel_name", "chain_id", "latitude", "longitude"],
         [[h, f"Hotel, number {h}", c, 0.0, 0.0] for h, (c, _, _) in HOTELS.items()])
    _csv(meta / "chain_info.csv", ["chain_id", "chain_name"], [[c, f"Chain {c}"] for c in (1, 2, 3)])
    return data


@pytest.fixture
def tiny_trees():
    """The builders, as a namespace: ``tiny_trees.cub(tmp_path)`` etc."""
    import types

    return types.SimpleNamespace(
        cub=make_cub, cars=make_cars, cars_devkit=make_cars_devkit, sop=make_sop, inshop=make_inshop,
        hotels=make_hotels, jpeg=write_jpeg,
    )


@pytest.fixture(autouse=True)
def _no_data_env(monkeypatch, tmp_path):
    """Tests never read a developer's real $HARDNEG_DATA or ~/data."""
    monkeypatch.setenv("HARDNEG_DATA", str(tmp_path / "hardneg_data_unset"))


@pytest.fixture(autouse=True)
def _tiny_trees_are_small_on_purpose():
    """The tiny trees never have the released row counts; tests that check the warning use pytest.warns."""
    import warnings

    from hardneg.data.benchmark import DatasetSizeWarning

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DatasetSizeWarning)
        yield
