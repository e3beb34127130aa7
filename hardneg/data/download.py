"""Download, verify and unpack a benchmark: ``python -m hardneg.data.download <name> [--root DIR]``.

The default root is the one the datamodules read: $HARDNEG_DATA/<name>, or ~/data/<name> when
HARDNEG_DATA is unset. Each file is fetched into ``<file>.part`` and resumed with an HTTP Range
request after a dropped connection (a few retries in this run; a later run resumes the same
.part). A file is only renamed into place after its checksum matches; on a mismatch the .part is
deleted (nothing corrupt is kept) and the command fails. Archives are then unpacked into the root
and, unless --keep-archive, deleted. A ``.hardneg-<file>.ok`` stamp makes a rerun skip done steps.

In-Shop and Hotels-50K need steps this tool cannot take for you (a licence form, the authors'
scraping script): it prints them and exits with status 3. Errors exit with status 1.

Checksums are of the files, whatever mirror serves them, so ``--url`` can point at a mirror and
the same checksum still applies. For a file whose checksum is not known, pass ``--sha256 none``:
it is then downloaded unverified and its SHA-256 is printed and written to ``<file>.sha256``.
"""
from __future__ import annotations

import argparse
import errno
import hashlib
import http.client
import os
import shutil
import socket
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

from hardneg.data.locations import default_root
from hardneg.errors import UserError


@dataclass(frozen=True)
class Resource:
    url: str
    filename: str
    md5: str | None = None
    sha256: str | None = None
    extract: bool = True


# Official sources. The MD5s are the ones the widely used loaders check (torchvision-style CUB
# loaders, avalanche, pytorch-metric-learning); they were not re-verified from this machine
# (no network). The Stanford servers have gone offline at times: use --url with a mirror.
SOURCES: dict[str, list[Resource]] = {
    "cub": [
        Resource("https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1",
                 "CUB_200_2011.tgz", md5="97eceeb196236b17998738112f37df78"),
    ],
    "cars": [
        Resource("http://ai.stanford.edu/~jkrause/car196/car_ims.tgz", "car_ims.tgz",
                 md5="d5c8f0aa497503f355e17dc7886c3f14"),
        Resource("http://ai.stanford.edu/~jkrause/car196/cars_annos.mat", "cars_annos.mat",
                 md5="b407c6086d669747186bd1d764ff9dbc", extract=False),
    ],
    "sop": [
        Resource("http://ftp.cs.stanford.edu/cs/cvgl/Stanford_Online_Products.zip",
                 "Stanford_Online_Products.zip", md5="7f73d41a2f44250d4779881525aea32e"),
    ],
}

MANUAL: dict[str, str] = {
    "inshop": """In-Shop Clothes Retrieval (DeepFashion) is shared on Google Drive after you accept its licence,
so it cannot be downloaded automatically.
  1. Open http://mmlab.ie.cuhk.edu.hk/projects/DeepFashion/InShopRetrieval.html, accept the agreement
     and open the "In-shop Clothes Retrieval Benchmark" folder.
  2. Download Eval/list_eval_partition.txt and Img/img.zip, and place them as
       {root}/Eval/list_eval_partition.txt
       {root}/Img/img.zip
  3. Unpack the images inside Img/:  cd {root}/Img && unzip img.zip   (gives {root}/Img/img/MEN/...)
     If the archive asks for a password, the DeepFashion authors send it once you agree to their terms.
  4. Train:  python -m hardneg.run data=inshop data.root={root}""",
    "hotels50k": """Hotels-50K is assembled with the authors' own scripts (the training images are fetched from
their source URLs), so it cannot be downloaded here in one archive.
  1. git clone https://github.com/GWUvision/Hotels-50K {root}
  2. Unpack the metadata:  cd {root}/input && tar -xzf dataset.tar.gz   (gives input/dataset/*.csv)
  3. Fetch the training images:  cd {root} && python download_train.py   (writes images/train/...;
     some source URLs are dead, which hardneg tolerates: missing training images are left out)
  4. Fetch the test images: download https://www2.seas.gwu.edu/~astylianou/hotels50k/test.tar.gz
     (3.14 GB) into {root}/images/ and unpack it there:  cd {root}/images && tar -xzf test.tar.gz
     (gives images/test/unoccluded/...)
  5. Train:  python -m hardneg.run data=hotels50k data.root={root}""",
}
DATASETS = (*SOURCES, *MANUAL)
EXIT_ERROR, EXIT_MANUAL = 1, 3
_CHUNK = 1 << 20


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, part: Path, timeout: float) -> None:
    """Append the rest of ``url`` to ``part``; raises on a dropped connection or short body."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "hardneg-download"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as response:
        if offset and response.status != 206:  # the server ignored the Range: start again
            offset = 0
        length = response.headers.get("Content-Length")
        expected = offset + int(length) if length is not None else None
        with part.open("ab" if offset else "wb") as out:
            shutil.copyfileobj(response, out, _CHUNK)
    size = part.stat().st_size
    if expected is not None and size < expected:
        raise http.client.IncompleteRead(b"", expected - size)


# Errors that a retry a few seconds later cannot fix: no DNS answer, no route, nobody listening.
_UNREACHABLE_ERRNOS = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ECONNREFUSED}


def _unreachable(exc: BaseException) -> bool:
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    return isinstance(reason, socket.gaierror) or getattr(reason, "errno", None) in _UNREACHABLE_ERRNOS


def download_file(url: str, dest: Path, retries: int = 5, timeout: float = 60.0, retry_wait: float = 2.0) -> None:
    """Fetch ``url`` to ``dest`` through ``dest.part``, resuming after interruptions.

    ``timeout`` is the socket timeout in seconds (no byte for that long: the attempt fails and is
    retried). A host that cannot be resolved or reached fails at once, without retries: offline,
    five retries with back-off would only add half a minute before the same message."""
    part = dest.with_name(dest.name + ".part")
    for attempt in range(1, retries + 1):
        try:
            _fetch(url, part, timeout)
            break
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and part.exists():  # nothing left to send: the .part is complete
                break
            if 400 <= exc.code < 500:
                raise UserError(f"download of {url} refused: HTTP {exc.code} {exc.reason}; try a mirror with --url") from exc
            error = exc
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            if _unreachable(exc):
                host = urllib.parse.urlsplit(url).hostname
                raise UserError(
                    f"cannot reach {host} for {url} ({getattr(exc, 'reason', exc)}): no network, or the name does not "
                    f"resolve. Check the connection (or proxy settings), or download on another machine and use "
                    f"--url with a reachable mirror"
                ) from exc
            error = exc
        have = part.stat().st_size if part.exists() else 0
        what = f"interrupted at {have:,} bytes" if have else "failed"
        print(f"transfer {what} ({error}); attempt {attempt}/{retries}", file=sys.stderr)
        if attempt < retries:
            time.sleep(retry_wait * attempt)
    else:
        resume = f"run the same command again to resume from {part}" if part.exists() else "check the network"
        raise UserError(f"download of {url} failed after {retries} attempts ({error}); {resume}, or use a mirror with --url")
    part.replace(dest)


def verify(path: Path, resource: Resource) -> None:
    """Raise (and delete ``path``) unless its checksum matches; record it when none is known."""
    checks = [(name, value) for name, value in (("md5", resource.md5), ("sha256", resource.sha256)) if value]
    for algorithm, expected in checks:
        actual = file_digest(path, algorithm)
        if actual != expected.lower():
            path.unlink()
            raise UserError(
                f"checksum mismatch for {resource.filename} from {resource.url}: {algorithm} {actual}, expected "
                f"{expected}. The file was deleted (nothing corrupt is kept); run again, or try a mirror with --url"
            )
    if not checks:
        sha256 = file_digest(path, "sha256")
        path.with_name(path.name + ".sha256").write_text(f"{sha256}  {resource.filename}\n")
        print(f"{resource.filename}: no checksum known, recorded sha256 {sha256} (pass --sha256 {sha256} next time)")


def _inside(root: Path, name: str) -> bool:
    target = os.path.realpath(os.path.join(root, name))
    return target == str(root) or target.startswith(str(root) + os.sep)


def _check_member(archive: Path, root: Path, name: str, link: str | None = None, special: bool = False) -> None:
    """Refuse a member that would land outside ``root`` (absolute, ``..``, or a link pointing out)
    or is a device/FIFO. Checked by hand, not only with tarfile's "data" filter, because Pythons
    before 3.12 (and some 3.8-3.11 patch releases) have no filter and would follow ``../``."""
    problem = None
    if os.path.isabs(name) or not _inside(root, name):
        problem = "would be written outside the target directory"
    elif link is not None and not _inside(root, os.path.join(os.path.dirname(name), link)):
        problem = f"is a link to {link!r}, outside the target directory"
    elif special:
        problem = "is a device file or FIFO"
    if problem:
        raise UserError(
            f"{archive} holds the member {name!r}, which {problem}; nothing more was extracted. The archive is "
            f"damaged or not the official one: delete it and download it again (or check the --url mirror)"
        )


def extract(archive: Path, root: Path) -> None:
    root = Path(os.path.realpath(root))
    try:
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tar:
                members = tar.getmembers()
                for m in members:
                    link = m.linkname if m.issym() else None
                    if m.islnk():  # a hard link's target is relative to the archive root
                        _check_member(archive, root, m.linkname)
                    _check_member(archive, root, m.name, link, special=m.isdev() or m.isfifo())
                # The "data" filter, where this Python has it, also drops unsafe permission bits.
                options = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(root, members=members, **options)
        elif zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                for name in z.namelist():
                    _check_member(archive, root, name)
                z.extractall(root)
        else:
            raise UserError(f"{archive} is neither a tar nor a zip archive; delete it and download it again")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
        # tarfile.FilterError (3.12+) is a TarError too: an unsafe member the check above missed.
        raise UserError(
            f"cannot unpack {archive}: {type(exc).__name__}: {exc}. The archive is damaged or incomplete: "
            f"delete it and download it again"
        ) from exc


def fetch_resource(resource: Resource, root: Path, keep_archive: bool = False, **download_options) -> None:
    stamp = root / f".hardneg-{resource.filename}.ok"
    if stamp.exists():
        print(f"{resource.filename}: already done ({stamp})")
        return
    dest = root / resource.filename
    if not dest.exists():
        print(f"downloading {resource.url} -> {dest}")
        download_file(resource.url, dest, **download_options)
    verify(dest, resource)
    if resource.extract:
        print(f"unpacking {dest} into {root}")
        extract(dest, root)
        if not keep_archive:
            dest.unlink()
    stamp.write_text(resource.url + "\n")


def _override(resources: list[Resource], values: list[str] | None, field: str) -> list[Resource]:
    if not values:
        return resources
    if len(values) != len(resources):
        raise UserError(f"--{field} was given {len(values)} times; give it once per file: {[r.filename for r in resources]}")
    return [replace(r, **{field: None if v.lower() == "none" else v}) for r, v in zip(resources, values)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hardneg.data.download", description=__doc__.split("\n")[0])
    parser.add_argument("name", choices=DATASETS)
    parser.add_argument("--root", help="target directory (default: $HARDNEG_DATA/<name>, or ~/data/<name>)")
    parser.add_argument("--url", action="append", help="mirror URL, once per file of the dataset, in order")
    parser.add_argument("--md5", action="append", help="expected MD5 per file ('none' to skip)")
    parser.add_argument("--sha256", action="append", help="expected SHA-256 per file ('none' to skip)")
    parser.add_argument("--keep-archive", action="store_true", help="keep archives after unpacking")
    parser.add_argument("--retries", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="socket timeout in seconds: an attempt with no data for this long fails (default 60)")
    args = parser.parse_args(argv)
    root = Path(args.root).expanduser() if args.root else default_root(args.name)
    if args.name in MANUAL:
        print(MANUAL[args.name].format(root=root), file=sys.stderr)
        return EXIT_MANUAL
    try:
        resources = SOURCES[args.name]
        for field, values in (("url", args.url), ("md5", args.md5), ("sha256", args.sha256)):
            resources = _override(resources, values, field)
        root.mkdir(parents=True, exist_ok=True)
        for resource in resources:
            fetch_resource(resource, root, keep_archive=args.keep_archive, retries=args.retries, timeout=args.timeout)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:  # a full disk or an unwritable root: no traceback, but the cause
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"{args.name} is ready in {root}. Train with: python -m hardneg.run data={args.name} data.root={root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
