"""Dataset files: use the local copy, or fetch it from its canonical URL when asked.

Nothing here touches the network unless ``download=True`` was passed and the file is
missing. Downloads are atomic (written to ``<file>.part``, then renamed), so a killed
download never leaves a file that reads as whole. A file that is there but does not read
whole (a download cut short and copied anyway, a damaged disk) raises
:class:`CorruptDataError`, which names it and says how to fetch it again; a cache that
does not read whole is only ignored (:func:`read_npz_cache`), and rebuilt by its caller.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import shutil
import stat
import tarfile
import urllib.request
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np
from pandas.errors import EmptyDataError, ParserError

from mia_bench.errors import UserError

USER_AGENT = "mia-bench"
log = logging.getLogger(__name__)
DAMAGE_ERRORS = (OSError, EOFError, zlib.error, tarfile.TarError, csv.Error, UnicodeError)
"""What reading a truncated or damaged archive, gzip or CSV raises (besides pandas')."""


class CorruptDataError(UserError):
    """A dataset file that is there but does not read whole, or is not the expected file.

    Attributes:
        path: the file.
    """

    def __init__(self, path: Path, problem: str, advice: str) -> None:
        self.path = Path(path)
        problem = " ".join(problem.split())  # tarfile's messages span lines
        super().__init__(f"{self.path}: {problem}; {advice}")


@contextmanager
def reading(path: Path, advice: str) -> Iterator[None]:
    """Report a damaged file read inside the block as one :class:`CorruptDataError`.

    Args:
        path: the file being read.
        advice: how to get a whole copy, e.g. the URL and ``--data.download true``.
    """
    try:
        yield
    except (PermissionError, FileNotFoundError):
        raise
    except (*DAMAGE_ERRORS, ParserError, EmptyDataError) as err:
        problem = f"is truncated or damaged ({type(err).__name__}: {err})"
        raise CorruptDataError(path, problem, advice) from err


def refetch_advice(url: str | None) -> str:
    """How to replace a damaged file.

    >>> refetch_advice("https://e.org/x.tgz")
    'delete it and download it again from https://e.org/x.tgz (--data.download true)'
    """
    if url is None:
        return "replace it with a whole copy of the original file"
    return f"delete it and download it again from {url} (--data.download true)"


def read_npz_cache(path: Path) -> dict[str, np.ndarray] | None:
    """Every array of an ``.npz`` cache; None if it is absent or does not read whole.

    A cache only saves time, so a damaged one (truncated, empty, a flipped byte caught by
    the zip CRC, a broken header) is logged and ignored: the caller rebuilds it.
    """
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {key: z[key] for key in z.files}  # reads and CRC-checks every array
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - a damaged file fails in any of numpy's layers
        log.warning(
            "ignoring unreadable cache %s (%s: %s); rebuilding it", path, type(err).__name__, err
        )
        return None


def missing_file_error(path: Path, url: str | None, hint: str = "") -> FileNotFoundError:
    """The error raised for a dataset file that is not where it was looked for.

    Args:
        path: the exact path that was looked for.
        url: the canonical URL it would be downloaded from, or None if there is none.
        hint: extra advice appended to the message.

    Returns:
        A ``FileNotFoundError`` whose message names the path, the URL and what to do.

    >>> str(missing_file_error(Path("d/x.tgz"), "https://e.org/x.tgz")).splitlines()[0]
    'dataset file not found: d/x.tgz'
    """
    lines = [f"dataset file not found: {path}"]
    if url is None:
        lines.append("There is no canonical download for this file.")
        lines.append(f"Pass --data.root DIR where DIR holds {path.name}.")
    else:
        lines.append(f"It is downloaded from: {url}")
        lines.append(
            f"Either pass --data.root DIR where DIR holds {path.name}, or pass "
            "--data.download true to fetch it into --data.root."
        )
    if hint:
        lines.append(hint)
    return FileNotFoundError("\n".join(lines))


def md5sum(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex md5 digest of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def check_md5(path: Path, md5: str | None) -> None:
    """Raise :class:`CorruptDataError` naming the file if its md5 is not ``md5`` (None: none)."""
    if md5 is None:
        return
    actual = md5sum(path)
    if actual != md5:
        raise CorruptDataError(
            path,
            f"is corrupted or not the expected file (md5 {actual}, expected {md5})",
            "delete it and download it again (--data.download true), or replace it with "
            "the original file",
        )


def fetch(url: str, path: Path) -> None:
    """Download ``url`` to ``path`` atomically (``<path>.part``, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=60) as response, open(part, "wb") as f:
            shutil.copyfileobj(response, f)
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)


def ensure_file(path: Path, url: str | None, download: bool, md5: str | None = None) -> Path:
    """Return ``path`` if it exists, else download it from ``url`` if allowed.

    Args:
        path: where the file must be.
        url: its canonical URL (None: it has no download).
        download: whether a missing file may be fetched.
        md5: expected md5 of the file, checked when given.

    Returns:
        ``path``, which exists and (if ``md5`` is given) matches it.

    Raises:
        FileNotFoundError: if the file is missing and cannot or may not be downloaded;
            the message names the path, the URL and what to do.
        CorruptDataError: if the file's md5 does not match (a ``ValueError``).
    """
    path = Path(path)
    if path.is_file():
        check_md5(path, md5)
        return path
    if not download or url is None:
        raise missing_file_error(path, url)
    fetch(url, path)
    try:
        check_md5(path, md5)
    except ValueError:
        path.unlink()  # never leave a bad download where it would be trusted next time
        raise
    return path


def _normalized(name: str) -> str:
    return name.removeprefix("./")


@contextmanager
def tar_member(archive: Path, member: str) -> Iterator[IO[bytes]]:
    """Open one file inside a ``.tgz`` archive for reading, without extracting it.

    Args:
        archive: path of the archive.
        member: the file's path inside the archive (a leading ``./`` is ignored).

    Yields:
        A binary file object positioned at the start of the member.

    Raises:
        KeyError: if the archive holds no such file; the message lists what it holds.
    """
    with tarfile.open(archive, "r:*") as tf:
        names = {_normalized(info.name): info for info in tf.getmembers() if info.isfile()}
        info = names.get(_normalized(member))
        if info is None:
            raise KeyError(
                f"{archive} holds no file {member!r}; it holds {sorted(names)[:10]}. "
                "Is it the right archive?"
            )
        f = tf.extractfile(info)
        assert f is not None  # a regular file always has a file object
        with f:
            yield f


def is_writable_folder(folder: Path) -> bool:
    """Whether files may be written in ``folder``.

    A folder whose mode has no write bit at all counts as read-only even for root
    (shared offline copies are stored that way).
    """
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        return False
    return bool(folder.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
