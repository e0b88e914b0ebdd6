"""Get a dataset's files into its home folder, or stop with one sentence that says how to.

Files already in the folder are used as they are (no network). Missing ones are fetched with
pooch, from each mirror in turn: pooch streams into a temporary file in the same folder, checks
the published md5 and only then moves it to its final name, so a file with the final name is
always complete (an interrupted, truncated or corrupt download leaves nothing a later run would
mistake for data). A folder this call had to create is removed again if nothing arrived in it.
Every failure becomes a one-line `DataError` raised before training starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from fastlight.errors import DataError


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


@contextlib.contextmanager
def _quiet_pooch():
    """pooch logs each download at INFO on stderr; the progress bar already says it."""
    import pooch

    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


class _Bar(tqdm):
    """The progress bar pooch drives (it sets `total`, then update/reset/close): off when stderr is
    not a terminal (disable=None), gone when done (leave=False)."""

    def __init__(self, name: str):
        super().__init__(unit="B", unit_scale=True, unit_divisor=1024, desc=name, file=sys.stderr, disable=None,
                         leave=False)

    def __bool__(self) -> bool:  # pooch asks `if progressbar:`; a tqdm with no total yet says False
        return True


# What requests/urllib3 say (somewhere in their long messages) -> what a user needs to read.
REASONS = (
    ("Connection refused", "connection refused"),
    ("NameResolutionError", "the host name could not be resolved (no network?)"),
    ("Name or service not known", "the host name could not be resolved (no network?)"),
    ("IncompleteRead", "connection closed before the whole file arrived"),
)


def _why(e: BaseException, remote: Remote, timeout: float) -> str:
    """A short, single-line reason for a failed download."""
    import requests

    text = str(e)
    if isinstance(e, ValueError) and remote.md5 and "hash" in text:  # pooch's checksum mismatch
        got = re.search(r"got ([0-9a-fA-F]{32})", text)
        return (f"checksum mismatch, {remote.name} download was corrupt "
                f"(expected md5 {remote.md5}" + (f", got {got.group(1)})" if got else ")"))
    if isinstance(e, requests.HTTPError) and e.response is not None:
        return f"HTTP {e.response.status_code} {e.response.reason}"
    if isinstance(e, (requests.Timeout, TimeoutError)):
        return f"timed out after {timeout:g} s"
    return next((why for marker, why in REASONS if marker in text), " ".join(text.split())[:200] or type(e).__name__)


def _fetch_one(folder: Path, remote: Remote, timeout: float) -> str | None:
    """Download `remote` into `folder`; None on success, else why every mirror failed."""
    import pooch
    import requests

    reasons = []
    for url in remote.urls:
        bar = _Bar(remote.name)
        downloader = pooch.HTTPDownloader(progressbar=bar, chunk_size=1 << 16, timeout=timeout,
                                          headers={"User-Agent": "fastlight"})
        try:
            with _quiet_pooch():
                path = Path(pooch.retrieve(url, known_hash=f"md5:{remote.md5.lower()}" if remote.md5 else None,
                                           fname=remote.name, path=folder, downloader=downloader))
            if path.stat().st_size > 0:
                return None
            path.unlink()
            reasons.append(f"{url}: empty file")
        except (OSError, ValueError, requests.RequestException) as e:  # ValueError: bad checksum or URL
            reasons.append(f"{url}: {_why(e, remote, timeout)}")
        finally:
            bar.close()
    return "; ".join(reasons) or f"no mirror known for {remote.name}"


def _created_by_mkdir(folder: Path) -> list[Path]:
    """The folders `folder.mkdir(parents=True)` is about to create, deepest first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    return missing


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
    created = _created_by_mkdir(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(f"the folder cannot be created ({e.strerror or e})", missing)
    try:
        for i, remote in enumerate(missing):
            why = _fetch_one(folder, remote, timeout)
            if why is not None:
                # Stop at the first failure: the next files would most likely fail (and wait) the same way.
                fail(f"the download failed ({why})", missing[i:])
    finally:
        for made in created:  # deepest first; a folder that got a file (or anything else) stays
            with contextlib.suppress(OSError):
                made.rmdir()
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
