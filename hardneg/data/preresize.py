"""A one-time pre-resized copy of a benchmark: ``python -m hardneg.data.preresize data=cub [overrides]``.

Every image a datamodule lists is written once with its shorter side at the training resize,
``int(1.1 * data.image_size)`` (281 px at 256), so each epoch decodes about half the pixels of a
CUB or SOP original and the training Resize has almost nothing left to do. Images already
smaller are copied byte for byte; with ``data.use_bbox=true`` the copy holds the box crops.

The copy is keyed by its source and size: ``<dir>/<name>-<short>px[-bbox]-<hash of the dataset
directory>/`` with the dataset's own relative paths, where ``<dir>`` is ``data.preresized_dir``
(default ``$HARDNEG_DATA/preresized``, or ``~/data/preresized``). A ``complete.json`` written last
marks it usable; an interrupted run resumes (finished files are kept). Training then reads the
copy automatically (``data.use_preresized=auto``; ``true`` requires it, ``false`` ignores it).

The copy is re-encoded as JPEG quality 95 (PNG sources stay PNG): on top of the resize, that adds
JPEG noise of about one uint8 level (measured in experiments/bench/results/loader.md).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image

from hardneg.data.fast_images import ORIGINAL_SIZE_TAG, original_size_note, resized_size
from hardneg.errors import UserError

QUALITY = 95
MARKER = "complete.json"


def short_side(image_size: int) -> int:
    """The copy's shorter side: the training Resize, ``int(1.1 * S)``, which eval's ``S`` is below."""
    return int(1.1 * int(image_size))


def copy_dir(base: Path, name: str, dataset_dir: Path, image_size: int, bbox: bool) -> Path:
    source = hashlib.sha1(str(Path(dataset_dir).resolve()).encode()).hexdigest()[:10]
    return Path(base) / f"{name}-{short_side(image_size)}px{'-bbox' if bbox else ''}-{source}"


def is_complete(directory: Path) -> bool:
    return (directory / MARKER).is_file()


def _resize_one(job) -> str | None:
    """Write one image's copy; returns an error message instead of raising (worker processes)."""
    source, target, short, box = job
    if os.path.exists(target):
        return None
    os.makedirs(os.path.dirname(target), exist_ok=True)
    partial = f"{target}.part{os.getpid()}"
    try:
        with Image.open(source) as im:
            fmt = im.format
            if box is None and min(im.size) <= short:
                shutil.copyfile(source, partial)  # nothing to shrink: keep the original bytes
                os.replace(partial, target)
                return None
            im = im.convert("RGB")
            if box is not None:
                from hardneg.data.images import _clamped_box

                im = im.crop(_clamped_box(box, im.size))
        width, height = im.size
        if min(width, height) > short:
            new_h, new_w = resized_size(width, height, short)
            im = im.resize((new_w, new_h), Image.BILINEAR)  # as the reference Resize
        # The original size goes into the file: the fast pipeline computes its output size from it, so
        # a copy yields the reference's size on the original (not one rounded from the copy's size).
        note = original_size_note(width, height)
        if fmt == "PNG":
            from PIL.PngImagePlugin import PngInfo

            info = PngInfo()
            info.add_text(ORIGINAL_SIZE_TAG, note)
            im.save(partial, "PNG", pnginfo=info)
        else:
            im.save(partial, "JPEG", quality=QUALITY, comment=note)
        os.replace(partial, target)
    except (OSError, ValueError, SyntaxError) as exc:
        if os.path.exists(partial):
            os.unlink(partial)
        return f"{source}: {type(exc).__name__}: {exc}"
    return None


def build_copy(datamodule, workers: int | None = None, log=print) -> Path:
    """Write (or finish) the pre-resized copy of ``datamodule``'s dataset; returns its directory."""
    dataset_dir = datamodule.dataset_dir()
    train, test = datamodule.read_records(dataset_dir)
    bbox = train.bboxes is not None
    target = datamodule.preresized_copy_dir(bbox)
    if is_complete(target):
        log(f"already complete: {target}")
        return target
    short = short_side(datamodule.image_size)
    jobs, seen = [], set()
    for records in (train, test):
        boxes = records.bboxes if bbox else [None] * len(records.paths)
        for path, box in zip(records.paths, boxes):
            relative = Path(path).relative_to(dataset_dir)
            if relative in seen:  # Hotels-50K: the gallery is the training set
                continue
            seen.add(relative)
            jobs.append((str(path), str(target / relative), short, None if box is None else tuple(box)))
    workers = workers or max(1, len(os.sched_getaffinity(0)))
    log(f"pre-resizing {len(jobs)} images of {dataset_dir} to a shorter side of {short} px into {target} "
        f"with {workers} processes")
    target.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(workers) as pool:
        errors = [e for e in pool.map(_resize_one, jobs, chunksize=64) if e]
    if errors:
        raise UserError(
            f"{len(errors)} of {len(jobs)} images could not be pre-resized (e.g. {errors[0]}); the copy is left "
            f"incomplete and unused. Repair or re-extract those files, then run the command again"
        )
    (target / MARKER).write_text(json.dumps({
        "source": str(Path(dataset_dir).resolve()), "short_side": short, "bbox": bbox,
        "images": len(jobs), "quality": QUALITY,
    }, indent=1) + "\n")
    log(f"done: {target}. Training with the same data settings now reads it (data.use_preresized=auto)")
    return target


def main(argv: list[str] | None = None) -> int:
    """Hydra-style overrides (``data=sop data.root=/x data.image_size=224``) plus ``--workers N``."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from hardneg.config import config_dir

    args = list(sys.argv[1:] if argv is None else argv)
    workers = None
    if "--workers" in args:
        at = args.index("--workers")
        workers = int(args[at + 1])
        del args[at : at + 2]
    try:
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            cfg = compose("config", overrides=[*args, "data.use_preresized=false"])
        datamodule = instantiate(cfg.data)
        if not hasattr(datamodule, "preresized_copy_dir"):
            raise UserError(f"data={cfg.data._target_} is not an image benchmark; nothing to pre-resize")
        build_copy(datamodule, workers)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
