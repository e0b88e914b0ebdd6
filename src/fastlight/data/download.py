"""Get a dataset's files into its home folder, or stop with one sentence that says how to.

Files already in the folder are used as they are (no network). Missing ones are streamed from
each mirror in turn into a temporary file *in the same folder*, checked against the published
md5, and only then `os.replace`d to their final name. So a file with the final name is always
complete: an interrupted, truncated or corrupt download leaves nothing behind that a later run
would mistake for data. Every failure becomes a `DataError` raised before training starts.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import socket
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from fastlight.errors import DataError

CHUNK = 1 << 16


@dataclass(frozen=True)
class Remote:
    name: str  # file name inside the dataset folder, e.g. "train-images-idx3-ubyte.gz"
    urls: tuple[str, ...]  # mirrors, tried in order
    md5: str | None = None  # published checksum; None = can't verify (then just size > 0)


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _timeout() -> float:
    raw = os.environ.get("FASTLIGHT_DOWNLOAD_TIMEOUT", "30")
    try:
        return float(raw)
    except ValueError:
        raise DataError(f"FASTLIGHT_DOWNLOAD_TIMEOUT must be a number of seconds, got {raw!r}.") from None


def _download(url: str, tmp: Path, name: str, timeout: float) -> int:
    """Stream `url` into `tmp`; raises OSError/HTTPException on a network failure or a short body."""
    # A fresh opener reads the proxy settings of *this* moment, not of the first urlopen call.
    opener = urllib.request.build_opener()
    request = urllib.request.Request(url, headers={"User-Agent": "fastlight"})
    with opener.open(request, timeout=timeout) as response, open(tmp, "wb") as out:
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        done = 0
        with tqdm(total=expected, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                  file=sys.stderr, disable=None, leave=False) as bar:  # disable=None: off when not a tty
            while block := response.read(CHUNK):
                out.write(block)
                done += len(block)
                bar.update(len(block))
    # http.client may return a short body without complaint when the server hangs up early.
    if expected is not None and done != expected:
        raise http.client.IncompleteRead(b"", expected - done)
    return done


def _why(e: BaseException, timeout: float) -> str:
    """A short, single-line reason for a failed request."""
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        e = e.reason if isinstance(e.reason, BaseException) else e
    if isinstance(e, (socket.timeout, TimeoutError)):
        return f"timed out after {timeout:g} s"
    if isinstance(e, http.client.IncompleteRead):
        return f"connection closed with {e.expected} bytes still to come"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    return str(getattr(e, "strerror", None) or getattr(e, "reason", None) or e) or type(e).__name__


def _fetch_one(folder: Path, remote: Remote, timeout: float) -> str | None:
    """Download `remote` into `folder`; None on success, else why every mirror failed."""
    reasons = []
    for url in remote.urls:
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{remote.name}.", suffix=".part")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            size = _download(url, tmp, remote.name, timeout)
            got = md5sum(tmp) if remote.md5 else None
            if remote.md5 and got != remote.md5.lower():
                reasons.append(f"{url}: checksum mismatch, {remote.name} download was corrupt "
                               f"(expected md5 {remote.md5}, got {got})")
            elif size == 0:
                reasons.append(f"{url}: empty file")
            else:
                os.replace(tmp, folder / remote.name)
                return None
        except (OSError, http.client.HTTPException, ValueError) as e:  # ValueError: malformed URL
            reasons.append(f"{url}: {_why(e, timeout)}")
        finally:
            # Also on Ctrl-C: a half-written temp file must never outlive this call.
            tmp.unlink(missing_ok=True)
    return "; ".join(reasons) or f"no mirror known for {remote.name}"


def fetch(
    folder: Path, files: Sequence[Remote], dataset: str, how_to: str = "", download: bool = True
) -> dict[str, Path]:
    """Paths of `files` inside `folder`, downloading the missing ones; else one-sentence DataError."""
    folder = Path(folder).expanduser().resolve()
    paths = {r.name: folder / r.name for r in files}
    missing = [r for r in files if not paths[r.name].is_file()]
    if not missing:
        return paths

    def fail(why: str, still_missing: Sequence[Remote]):
        names = ", ".join(r.name for r in still_missing)
        tail = f"; {how_to.strip().rstrip('.')}" if how_to.strip() else ""
        msg = f"{dataset}: missing {names} in {folder} and {why}{tail}."
        raise DataError(" ".join(msg.split()))  # one line, whatever the reasons contained

    if not download:
        fail("downloading is turned off (download=False)", missing)
    timeout = _timeout()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(f"the folder cannot be created ({e.strerror or e})", missing)
    for i, remote in enumerate(missing):
        why = _fetch_one(folder, remote, timeout)
        if why is not None:
            # Stop at the first failure: the next files would most likely fail (and wait) the same way.
            fail(f"the download failed ({why})", missing[i:])
    return paths


def extract_zip(archive: Path, dest: Path, members_prefix: str | None = None) -> None:
    """Extract `archive` into `dest`, via a temp dir beside `dest` so a failure leaves no half tree.

    With `members_prefix` (e.g. "ml-100k/") only members under it are extracted, with the prefix
    removed, so `dest` holds that folder's contents directly. Existing entries of the same name
    in `dest` are replaced.
    """
    archive, dest = Path(archive), Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part"))
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            if members_prefix:
                members = [m for m in members if m.filename.startswith(members_prefix)]
                if not members:
                    raise DataError(f"{archive} has no members under {members_prefix!r}; delete it to download it again.")
                for m in members:
                    # zipfile checks the local header against orig_filename, so renaming here is safe.
                    m.filename = m.filename[len(members_prefix):]
            for m in members:
                if m.filename.strip("/"):
                    zf.extract(m, tmp)  # zipfile drops ".." and absolute parts of member names
        if not dest.exists():
            os.replace(tmp, dest)  # one atomic rename
            return
        for item in tmp.iterdir():  # dest already exists (often: it also holds the archive)
            target = dest / item.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(item, target)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
        raise DataError(f"{archive} is not a valid zip file ({e}); delete it to download it again.") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
