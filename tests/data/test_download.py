"""`fastlight.data.download` against a real HTTP server on 127.0.0.1 (no other network)."""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import io
import socket
import struct
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from fastlight.data.download import Remote, extract_zip, fetch, md5sum
from fastlight.errors import DataError

PAYLOAD = b"fastlight test payload\n" * 1000
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()
HOW_TO = "copy them there from the lab share"


class Handler(http.server.SimpleHTTPRequestHandler):
    """Serves files from a folder, counts requests, and fakes a dropped connection under /short/."""

    hits: list[str]

    def do_GET(self):
        self.hits.append(self.path)
        if self.path.startswith("/short/"):
            body = PAYLOAD[:100]
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))  # promises more than it sends
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture(autouse=True)
def _local_only(monkeypatch):
    # Never let a proxy from the environment intercept the 127.0.0.1 requests; keep failures fast.
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "*")
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("FASTLIGHT_DOWNLOAD_TIMEOUT", "5")


@pytest.fixture
def server(tmp_path):
    """(base URL, served folder, list of request paths)."""
    root = tmp_path / "served"
    root.mkdir()
    hits: list[str] = []
    handler = type("H", (Handler,), {"hits": hits})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", root, hits
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def closed_port_url():
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_downloads_verifies_and_then_uses_the_local_file(server, tmp_path):
    base, served, hits = server
    (served / "a.bin").write_bytes(PAYLOAD)
    folder = tmp_path / "data" / "ds"
    remotes = [Remote("a.bin", (base + "a.bin",), PAYLOAD_MD5)]

    paths = fetch(folder, remotes, dataset="DS")
    assert paths == {"a.bin": folder.resolve() / "a.bin"}
    assert paths["a.bin"].read_bytes() == PAYLOAD
    assert md5sum(paths["a.bin"]) == PAYLOAD_MD5
    assert leftovers(folder) == ["a.bin"]  # no temp file left
    assert hits == ["/a.bin"]

    assert fetch(folder, remotes, dataset="DS") == paths
    assert hits == ["/a.bin"]  # second call: no request


def test_corrupt_download_raises_and_leaves_nothing(server, tmp_path):
    base, served, _ = server
    (served / "a.bin").write_bytes(PAYLOAD + b"tampered")
    folder = tmp_path / "ds"
    with pytest.raises(DataError) as err:
        fetch(folder, [Remote("a.bin", (base + "a.bin",), PAYLOAD_MD5)], dataset="DS", how_to=HOW_TO)
    msg = str(err.value)
    assert "a.bin" in msg and "corrupt" in msg and "checksum" in msg
    assert PAYLOAD_MD5 in msg and hashlib.md5(PAYLOAD + b"tampered").hexdigest() in msg and "\n" not in msg
    assert not folder.exists()  # no empty dataset folder left behind either


def test_falls_back_to_the_next_mirror(server, tmp_path, closed_port_url):
    base, served, hits = server
    (served / "a.bin").write_bytes(PAYLOAD)
    folder = tmp_path / "ds"
    urls = (closed_port_url + "a.bin", base + "missing/a.bin", base + "a.bin")
    paths = fetch(folder, [Remote("a.bin", urls, PAYLOAD_MD5)], dataset="DS")
    assert paths["a.bin"].read_bytes() == PAYLOAD
    assert hits == ["/missing/a.bin", "/a.bin"]  # the 404, then the good mirror
    assert leftovers(folder) == ["a.bin"]


@pytest.mark.parametrize("md5", [PAYLOAD_MD5, None])
def test_interrupted_download_leaves_no_file(server, tmp_path, md5):
    base, _, _ = server
    folder = tmp_path / "ds"
    with pytest.raises(DataError) as err:
        fetch(folder, [Remote("a.bin", (base + "short/a.bin",), md5)], dataset="DS", how_to=HOW_TO)
    assert "a.bin" in str(err.value) and "download failed" in str(err.value)
    assert "connection closed before the whole file arrived" in str(err.value)
    assert not folder.exists()


def test_a_failed_download_removes_only_the_folders_it_created(server, tmp_path):
    base, _, _ = server
    remotes = [Remote("a.bin", (base + "missing/a.bin",), PAYLOAD_MD5)]
    with pytest.raises(DataError, match="HTTP 404"):
        fetch(tmp_path / "root" / "ds", remotes, dataset="DS")
    assert leftovers(tmp_path) == ["served"]  # neither ds/ nor the data root it had to make
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    with pytest.raises(DataError):
        fetch(kept, remotes, dataset="DS")
    assert leftovers(kept) == ["notes.txt"]  # a folder that was there stays, with what it held


def test_a_second_file_that_fails_keeps_the_first_one(server, tmp_path):
    base, served, _ = server
    (served / "a.bin").write_bytes(PAYLOAD)
    folder = tmp_path / "ds"
    remotes = [Remote("a.bin", (base + "a.bin",), PAYLOAD_MD5), Remote("b.bin", (base + "b.bin",))]
    with pytest.raises(DataError) as err:
        fetch(folder, remotes, dataset="DS")
    assert "missing b.bin in" in str(err.value) and "a.bin," not in str(err.value)
    assert leftovers(folder) == ["a.bin"]  # complete, verified: the next run only fetches b.bin


def test_progress_bar_on_a_terminal_only(server, tmp_path):
    base, served, _ = server
    (served / "a.bin").write_bytes(PAYLOAD)

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for tty, name in ((True, "tty"), (False, "pipe")):
        err = Terminal() if tty else io.StringIO()
        with contextlib.redirect_stderr(err):
            fetch(tmp_path / name, [Remote("a.bin", (base + "a.bin",), PAYLOAD_MD5)], dataset="DS")
        shown = err.getvalue()
        if tty:
            assert "a.bin" in shown and "22.5k" in shown  # the name and the size (23,000 B = 22.5 KiB)
        else:
            assert shown == ""  # logs and pipes get no bar


def test_download_off_names_files_folder_and_how_to(server, tmp_path):
    base, served, hits = server
    (served / "a.bin").write_bytes(PAYLOAD)
    folder = tmp_path / "ds"
    remotes = [Remote("a.bin", (base + "a.bin",)), Remote("b.bin", (base + "b.bin",))]
    with pytest.raises(DataError) as err:
        fetch(folder, remotes, dataset="DS", how_to=HOW_TO, download=False)
    msg = str(err.value)
    assert msg.startswith("DS: missing a.bin, b.bin in ") and str(folder.resolve()) in msg
    assert HOW_TO in msg and "\n" not in msg and msg.endswith(".")
    assert hits == []


def test_unreachable_mirrors_name_files_folder_and_how_to(tmp_path, closed_port_url):
    folder = tmp_path / "ds"
    remotes = [Remote("a.bin", (closed_port_url + "a.bin",)), Remote("b.bin", (closed_port_url + "b.bin",))]
    with pytest.raises(DataError) as err:
        fetch(folder, remotes, dataset="DS", how_to=HOW_TO)
    msg = str(err.value)
    assert "a.bin, b.bin" in msg and str(folder.resolve()) in msg and HOW_TO in msg
    assert "connection refused" in msg and "\n" not in msg
    assert leftovers(folder) == []


def test_present_files_are_used_without_requests(server, tmp_path):
    base, _, hits = server
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"local copy")
    paths = fetch(folder, [Remote("a.bin", (base + "a.bin",))], dataset="DS", download=False)
    assert paths["a.bin"].read_bytes() == b"local copy"
    assert fetch(folder, [Remote("a.bin", (base + "a.bin",))], dataset="DS")["a.bin"] == paths["a.bin"]
    assert hits == []


def test_extract_zip(tmp_path):
    archive = tmp_path / "dl" / "pack.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("pack/a.txt", "A")
        zf.writestr("pack/sub/b.txt", "B")
        zf.writestr("other.txt", "O")

    extract_zip(archive, tmp_path / "full")
    assert (tmp_path / "full" / "pack" / "sub" / "b.txt").read_text() == "B"
    assert (tmp_path / "full" / "other.txt").read_text() == "O"

    # Into a folder that exists already (here: the one holding the archive), only one subtree.
    extract_zip(archive, archive.parent, members_prefix="pack/")
    assert sorted(p.name for p in archive.parent.iterdir()) == ["a.txt", "pack.zip", "sub"]
    assert (archive.parent / "sub" / "b.txt").read_text() == "B"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp dirs left

    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"this is not a zip file")
    with pytest.raises(DataError, match="bad.zip"):
        extract_zip(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def idx_gz(images: np.ndarray | None = None, labels: np.ndarray | None = None) -> bytes:
    """The original MNIST file format: a big-endian header (magic, count[, rows, cols]), then bytes."""
    if images is not None:
        raw = struct.pack(">IIII", 2051, *images.shape) + images.astype(np.uint8).tobytes()
    else:
        raw = struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes()
    return gzip.compress(raw)


def test_mnist_downloads_checks_and_reads_its_idx_files(server, tmp_path, monkeypatch):
    from fastlight.data import mnist

    base, served, hits = server
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte.gz": rng.integers(0, 256, (12, 28, 28)),
              "train-labels-idx1-ubyte.gz": np.arange(12) % 10,
              "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (4, 28, 28)),
              "t10k-labels-idx1-ubyte.gz": np.array([3, 1, 4, 1])}
    files = {}
    for name, a in arrays.items():
        body = idx_gz(images=a) if a.ndim == 3 else idx_gz(labels=a)
        (served / name).write_bytes(body)
        files[name] = hashlib.md5(body).hexdigest()
    monkeypatch.setattr(mnist, "MIRRORS", (base + "missing/", base))  # the first mirror is down
    monkeypatch.setattr(mnist, "FILES", files)
    dm = mnist.MNISTData(root=str(tmp_path / "root"), valid_size=2)
    dm.prepare_data()
    assert leftovers(tmp_path / "root" / "mnist") == sorted(files)
    x, y, x_test, y_test = dm.load()
    assert x.shape == (12, 784) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert torch.equal(x[3], torch.from_numpy(arrays["train-images-idx3-ubyte.gz"][3].reshape(784) / 255.0).float())
    assert y.tolist() == list(np.arange(12) % 10) and y_test.tolist() == [3, 1, 4, 1]
    n_hits = len(hits)
    mnist.MNISTData(root=str(tmp_path / "root")).prepare_data()
    assert len(hits) == n_hits  # present and complete: no request


def test_a_truncated_idx_file_on_disk_says_delete_it(tmp_path):
    from fastlight.data.mnist import read_idx

    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(idx_gz(images=np.zeros((2, 28, 28)))[:-20])
    with pytest.raises(DataError, match="not a valid MNIST idx.gz file.*delete it"):
        read_idx(path)
