"""The downloader against a local HTTP server on 127.0.0.1 serving a fixture archive."""
from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
from pathlib import Path

import pytest

from hardneg.data import download
from hardneg.data.cub import CUBDataModule
from hardneg.errors import UserError


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.payload`` at any path, honours ``Range: bytes=N-``, and when
    ``server.drop_first`` is set sends only half of the first response before hanging up."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        server = self.server
        server.ranges.append(self.headers.get("Range"))
        body, status, start = server.payload, 200, 0
        if self.headers.get("Range") and server.honour_range:
            start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.end_headers()
                return
            status = 206
        chunk = body[start:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(chunk)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        if server.drop_first:
            server.drop_first = False
            self.wfile.write(chunk[: len(chunk) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(chunk)

    def log_message(self, *args):  # keep the test output quiet
        pass


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.payload, httpd.ranges, httpd.drop_first, httpd.honour_range = b"", [], False, True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/CUB_200_2011.tgz"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def cub_archive(tmp_path: Path, tiny_trees) -> bytes:
    """A tar.gz of a tiny CUB_200_2011/ tree, like the official archive."""
    data = tiny_trees.cub(tmp_path / "source")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(data, arcname="CUB_200_2011")
    return buffer.getvalue()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def run(root: Path, server, checksum: str, *extra) -> int:
    return download.main(["cub", "--root", str(root), "--url", server.url, "--md5", checksum, "--retries", "3", *extra])


@pytest.fixture(autouse=True)
def _no_retry_wait(monkeypatch):
    monkeypatch.setattr(download.time, "sleep", lambda seconds: None)


def test_download_verify_extract_then_train_ready(tmp_path, tiny_trees, server, capsys):
    server.payload = cub_archive(tmp_path, tiny_trees)
    root = tmp_path / "cub"
    assert run(root, server, md5(server.payload)) == 0
    assert "data=cub data.root=" in capsys.readouterr().out
    assert not (root / "CUB_200_2011.tgz").exists()  # the archive is removed after unpacking
    dm = CUBDataModule(root=str(root), image_size=16)
    dm.setup()
    assert len(dm.splits.train) == 10
    assert run(root, server, md5(server.payload)) == 0 and len(server.ranges) == 1  # a rerun skips done steps


def test_checksum_mismatch_refused_and_nothing_kept(tmp_path, tiny_trees, server, capsys):
    server.payload = cub_archive(tmp_path, tiny_trees)
    root = tmp_path / "cub"
    assert run(root, server, "0" * 32) == download.EXIT_ERROR
    err = capsys.readouterr().err
    assert "checksum mismatch for CUB_200_2011.tgz" in err and "expected 00000000" in err and "deleted" in err
    assert sorted(p.name for p in root.iterdir()) == []  # no archive, no .part, nothing unpacked


def test_interrupted_transfer_resumes_with_range(tmp_path, tiny_trees, server, capsys):
    server.payload = cub_archive(tmp_path, tiny_trees)
    server.drop_first = True
    root = tmp_path / "cub"
    assert run(root, server, md5(server.payload), "--keep-archive") == 0
    half = len(server.payload) // 2
    assert server.ranges == [None, f"bytes={half}-"]
    assert "transfer interrupted at" in capsys.readouterr().err
    assert (root / "CUB_200_2011.tgz").read_bytes() == server.payload
    assert (root / "CUB_200_2011" / "images.txt").exists()


def test_part_file_from_an_earlier_run_is_resumed(tmp_path, server):
    server.payload = bytes(range(256)) * 40
    dest = tmp_path / "file.bin"
    dest.with_name("file.bin.part").write_bytes(server.payload[:1000])
    download.download_file(server.url, dest, retry_wait=0)
    assert server.ranges == ["bytes=1000-"] and dest.read_bytes() == server.payload
    assert not dest.with_name("file.bin.part").exists()


def test_server_ignoring_range_restarts(tmp_path, server):
    server.payload, server.honour_range = b"x" * 5000, False
    dest = tmp_path / "file.bin"
    dest.with_name("file.bin.part").write_bytes(b"garbage")
    download.download_file(server.url, dest, retry_wait=0)
    assert dest.read_bytes() == server.payload


def test_gives_up_after_retries_and_keeps_the_part(tmp_path, server):
    server.payload = b"y" * 4000

    class AlwaysDrop(_Handler):
        def do_GET(self):  # noqa: N802
            self.server.drop_first = True
            super().do_GET()

    server.RequestHandlerClass = AlwaysDrop
    dest = tmp_path / "file.bin"
    with pytest.raises(UserError, match="failed after 2 attempts.*run the same command again to resume"):
        download.download_file(server.url, dest, retries=2, retry_wait=0)
    assert 0 < dest.with_name("file.bin.part").stat().st_size < 4000 and not dest.exists()


def test_unknown_checksum_is_recorded(tmp_path, server, capsys):
    server.payload = b"z" * 100
    resource = download.Resource(server.url, "notes.bin", extract=False)
    download.fetch_resource(resource, tmp_path, retry_wait=0)
    sha = hashlib.sha256(server.payload).hexdigest()
    assert (tmp_path / "notes.bin.sha256").read_text().startswith(sha)
    assert f"--sha256 {sha}" in capsys.readouterr().out


@pytest.mark.parametrize("name, needle", [("inshop", "list_eval_partition.txt"), ("hotels50k", "download_train.py")])
def test_manual_datasets_print_instructions(tmp_path, capsys, name, needle):
    assert download.main([name, "--root", str(tmp_path)]) == download.EXIT_MANUAL
    err = capsys.readouterr().err
    assert needle in err and str(tmp_path) in err and f"data={name}" in err


def test_sources_table_is_complete():
    assert set(download.DATASETS) == {"cub", "cars", "sop", "inshop", "hotels50k"}
    for resources in download.SOURCES.values():
        assert all(r.url.startswith(("http://", "https://")) and r.md5 for r in resources)


def test_unresolvable_host_fails_at_once_without_retries(tmp_path, monkeypatch):
    import socket
    import urllib.error

    calls = []

    def no_dns(*args, **kwargs):
        calls.append(args)
        raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(download.urllib.request, "urlopen", no_dns)
    with pytest.raises(UserError, match=r"cannot reach example.invalid .*name resolution.*--url"):
        download.download_file("https://example.invalid/CUB_200_2011.tgz", tmp_path / "x.tgz", retries=5)
    assert len(calls) == 1  # no retries: offline, they only add waiting before the same message


def test_refused_connection_fails_at_once(tmp_path):
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nobody listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UserError, match=r"cannot reach 127.0.0.1"):
        download.download_file(f"http://127.0.0.1:{port}/f.tgz", tmp_path / "f.tgz", retries=5, retry_wait=100)


def test_timeout_is_a_command_line_option(tmp_path, server, monkeypatch):
    seen = []
    monkeypatch.setattr(download, "download_file", lambda url, dest, **kw: seen.append(kw) or dest.write_bytes(b""))
    download.main(["cub", "--root", str(tmp_path), "--url", server.url, "--md5", "none", "--timeout", "7.5"])
    assert seen[0]["timeout"] == 7.5


def _tar_with(tmp_path, add) -> Path:
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        add(tar)
    return path


def _file(tar, name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _link(tar, name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    tar.addfile(info)


@pytest.mark.parametrize("with_filter", [True, False], ids=["python-with-data-filter", "python-without-filter"])
@pytest.mark.parametrize("member", ["dotdot", "absolute", "symlink-out", "hardlink-out", "dotdot-via-subdir"])
def test_extraction_refuses_members_leaving_the_root(tmp_path, monkeypatch, member, with_filter):
    if not with_filter:
        monkeypatch.delattr(download.tarfile, "data_filter", raising=False)
    elif not hasattr(download.tarfile, "data_filter"):
        pytest.skip("this Python has no tarfile.data_filter")
    add = {
        "dotdot": lambda t: _file(t, "../escaped.txt"),
        "absolute": lambda t: _file(t, str(tmp_path / "escaped.txt")),
        "symlink-out": lambda t: _link(t, "CUB/link", "../../escaped.txt"),
        "hardlink-out": lambda t: _link(t, "CUB/hard", "../escaped.txt", tarfile.LNKTYPE),
        "dotdot-via-subdir": lambda t: _file(t, "CUB/../../escaped.txt"),
    }[member]
    archive = _tar_with(tmp_path, lambda t: (_file(t, "CUB/ok.txt"), add(t)))
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(UserError, match=r"evil.tar holds the member .*outside the target directory.*download it again"):
        download.extract(archive, root)
    assert not (tmp_path / "escaped.txt").exists() and not list(root.iterdir())  # checked before writing anything


def test_damaged_archive_is_a_clear_error(tmp_path, tiny_trees):
    data = cub_archive(tmp_path, tiny_trees)
    archive = tmp_path / "CUB_200_2011.tgz"
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"cannot unpack .*CUB_200_2011.tgz.*damaged or incomplete"):
        download.extract(archive, tmp_path / "root")


def test_main_reports_an_unsafe_member_without_traceback(tmp_path, server, capsys):
    archive = _tar_with(tmp_path, lambda t: _file(t, "../escaped.txt"))
    server.payload = archive.read_bytes()
    assert run(tmp_path / "root", server, md5(server.payload)) == download.EXIT_ERROR
    assert "holds the member '../escaped.txt'" in capsys.readouterr().err


def test_downloader_starts_without_torch():
    """Offline, the command must fail in about a second: importing torch/Lightning first took ~20 s
    on a loaded machine, so the downloader imports neither."""
    import subprocess
    import sys

    code = "import sys, hardneg.data.download; print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
