"""Offline-file-or-download helper: never touches the network here (file:// URLs)."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from mia_bench.data.download import ensure_file, is_writable_folder, tar_member


def test_present_file_is_returned_and_md5_checked(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(b"abc")
    assert ensure_file(path, "https://example.org/a.bin", False, hashlib.md5(b"abc").hexdigest())
    with pytest.raises(ValueError, match=str(path)):
        ensure_file(path, "https://example.org/a.bin", False, md5="0" * 32)


def test_missing_file_error_names_path_url_and_options(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    with pytest.raises(FileNotFoundError) as err:
        ensure_file(path, "https://example.org/a.bin", download=False)
    for text in (str(path), "https://example.org/a.bin", "--data.root", "--data.download"):
        assert text in str(err.value)


def test_download_is_atomic_and_checked(tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(b"payload")
    target = tmp_path / "sub" / "a.bin"
    ensure_file(target, source.as_uri(), download=True)
    assert target.read_bytes() == b"payload"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.bin"]
    bad = tmp_path / "b.bin"
    with pytest.raises(ValueError, match="md5"):
        ensure_file(bad, source.as_uri(), download=True, md5="0" * 32)
    assert not bad.exists()


def test_tar_member_ignores_dot_prefix_and_lists_members(tmp_path: Path) -> None:
    archive = tmp_path / "x.tgz"
    with tarfile.open(archive, "w:gz") as tf:
        info = tarfile.TarInfo("./inner/file")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"hi"))
    with tar_member(archive, "inner/file") as f:
        assert f.read() == b"hi"
    with pytest.raises(KeyError, match="inner/file"), tar_member(archive, "other"):
        pass


def test_folder_without_write_bits_is_read_only(tmp_path: Path) -> None:
    assert is_writable_folder(tmp_path)
    tmp_path.chmod(0o555)
    try:
        assert not is_writable_folder(tmp_path)
    finally:
        tmp_path.chmod(0o755)
