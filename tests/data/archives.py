"""Small archives written by the data tests, in the formats the loaders read."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path


def write_tgz(path: Path, members: dict[str, str]) -> Path:
    """A ``.tgz`` holding text files (``{name inside the archive: text}``)."""
    with tarfile.open(path, "w:gz") as tf:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path
