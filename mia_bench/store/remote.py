"""Runs whose artifacts live behind MLflow's artifact API, not in a local folder.

With ``mlflow server --serve-artifacts`` (artifact URIs ``mlflow-artifacts:/...``), S3,
GCS or any other remote artifact store, every mia-bench command works on a local folder
per run and the store stays the truth:

* **writing** (a fit, ``mia-bench record``): the run's files are written, atomically, to
  its local folder (a :class:`Mirror`, registered by the writer), and each finished file
  is uploaded at once (:func:`uploaded`), so a run killed mid-way has every complete
  epoch in the store and can be resumed on another machine; a removed file is removed
  there too (:func:`removed`). The checkpoints folder mirrors the run's
  ``checkpoints/`` artifacts the same way.
* **reading** (audits, references, ``compare``, ``record``): a run's files are read from
  a cache folder, ``$MIA_BENCH_CACHE/artifacts/<run id>/`` (default
  ``~/.cache/mia-bench``), filled on first use with the files a command needs and never
  downloaded again (:class:`RemoteFolder`). Downloads land under a temporary name and
  are renamed into place, so a killed download never leaves a file that reads as whole.

A run id names one run in one store, so one cache serves every store and command.
"""

from __future__ import annotations

import os
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

CACHE_ENV = "MIA_BENCH_CACHE"
_mirrors: dict[Path, Mirror] = {}
_lock = threading.Lock()


def is_local(artifact_uri: str) -> bool:
    """Whether an artifact URI is a folder of this machine's file system.

    >>> is_local("file:///data/mlruns/1"), is_local("/data"), is_local("mlflow-artifacts:/1")
    (True, True, False)
    """
    return urlparse(artifact_uri).scheme in ("", "file")


def cache_root() -> Path:
    """Where remote runs' files are cached (``$MIA_BENCH_CACHE``, else ``~/.cache/mia-bench``)."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mia-bench"
    return Path(root).expanduser().resolve()


def cache_dir(run_id: str, prefix: str = "") -> Path:
    """The local folder of a remote run's artifacts (under ``prefix``, e.g. checkpoints)."""
    folder = cache_root() / "artifacts" / run_id
    return folder / prefix if prefix else folder


def repository(artifact_uri: str, tracking_uri: str):
    """MLflow's artifact repository of a run's ``artifact_uri``."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    return get_artifact_repository(artifact_uri, tracking_uri=tracking_uri)


@dataclass
class RemoteFolder:
    """A run's artifacts under ``prefix`` in a remote store, read through ``folder``.

    Args:
        artifact_uri: the run's artifact URI.
        tracking_uri: the tracking store (the artifact proxy lives there).
        folder: the local folder the files go to.
        prefix: artifact path of ``folder`` inside the run (``""`` or ``"checkpoints"``).
    """

    artifact_uri: str
    tracking_uri: str
    folder: Path
    prefix: str = ""
    _listings: dict[str, dict[str, int]] = field(default_factory=dict, repr=False)
    _repo: object = field(default=None, repr=False)

    @property
    def repo(self):
        if self._repo is None:
            self._repo = repository(self.artifact_uri, self.tracking_uri)
        return self._repo

    def remote_path(self, relative: str) -> str:
        """The artifact path of a file given relative to :attr:`folder`."""
        return f"{self.prefix}/{relative}".strip("/") if self.prefix else relative

    def listing(self, subdir: str = "") -> dict[str, int]:
        """``name -> size`` of the files in ``subdir`` (relative to :attr:`folder`), cached;
        folders have size -1."""
        if subdir not in self._listings:
            found = self.repo.list_artifacts(self.remote_path(subdir) or None)
            self._listings[subdir] = {
                Path(f.path).name: -1 if f.is_dir else int(f.file_size or 0) for f in found
            }
        return self._listings[subdir]

    def has(self, relative: str) -> bool:
        """Whether the store holds the file ``relative`` (a path under :attr:`folder`)."""
        parent, _, name = relative.rpartition("/")
        return self.listing(parent).get(name, -1) >= 0

    def fetch(self, relative: str) -> Path:
        """The local copy of ``relative``, downloaded unless the cache holds it whole."""
        local = self.folder / relative
        parent, _, name = relative.rpartition("/")
        size = self.listing(parent).get(name)
        if local.is_file() and (size is None or local.stat().st_size == size):
            return local
        if size is None or size < 0:
            return local  # not in the store: the reader reports the missing file
        staging = self.folder.parent / f".download-{uuid.uuid4().hex}"
        staging.mkdir(parents=True)
        try:
            got = Path(self.repo.download_artifacts(self.remote_path(relative), str(staging)))
            local.parent.mkdir(parents=True, exist_ok=True)
            os.replace(got, local)
        finally:
            _remove_tree(staging)
        return local

    def fetch_all(self, subdir: str = "") -> list[Path]:
        """Every file under ``subdir``, recursively, in the cache."""
        got = []
        for name, size in self.listing(subdir).items():
            relative = f"{subdir}/{name}".strip("/")
            got += self.fetch_all(relative) if size < 0 else [self.fetch(relative)]
        return got


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


class Mirror(RemoteFolder):
    """A local folder whose files a writer uploads as it finishes them."""

    def relative(self, path: Path) -> str | None:
        """``path`` relative to the folder, or None when it lies outside."""
        try:
            return Path(path).resolve().relative_to(self.folder.resolve()).as_posix()
        except ValueError:
            return None

    def upload(self, path: Path) -> None:
        """Upload one finished file to its place in the run's artifacts."""
        relative = self.relative(path)
        parent = relative.rpartition("/")[0] if relative else ""
        self.repo.log_artifact(str(path), self.remote_path(parent) or None)
        self._listings.pop(parent, None)

    def delete(self, path: Path) -> None:
        """Remove a file (or folder) from the run's artifacts."""
        relative = self.relative(path)
        if relative:
            try:
                self.repo.delete_artifacts(self.remote_path(relative))
            except Exception:  # noqa: BLE001 - absent there already, or the store cannot delete
                pass
            self._listings.clear()

    def push_missing(self) -> list[Path]:
        """Upload every local file the store lacks or holds at another size (an upload a
        killed process did not finish); temporary files and ``last.ckpt`` (a link to the
        newest epoch's checkpoint) stay local."""
        pushed = []
        for path in sorted(p for p in self.folder.rglob("*") if p.is_file()):
            relative = self.relative(path)
            if relative is None or path.name.startswith(".") or path.name == "last.ckpt":
                continue
            parent, _, name = relative.rpartition("/")
            if self.listing(parent).get(name) != path.stat().st_size:
                self.upload(path)
                pushed.append(path)
        return pushed


def register(mirror: Mirror) -> Mirror:
    """Make ``mirror`` receive this process's writes under its folder."""
    with _lock:
        _mirrors[mirror.folder.resolve()] = mirror
    return mirror


def forget(folder: Path) -> None:
    """Stop mirroring ``folder`` (a run ended)."""
    with _lock:
        _mirrors.pop(Path(folder).resolve(), None)


def mirror_of(path: Path) -> Mirror | None:
    """The registered mirror whose folder holds ``path``, or None."""
    resolved = Path(path).resolve()
    with _lock:
        for folder, mirror in _mirrors.items():
            if resolved == folder or folder in resolved.parents:
                return mirror
    return None


def mirror_run(
    tracking_uri: str, run_id: str, checkpoint_dir: Path
) -> tuple[Mirror, Mirror] | None:
    """For a run whose artifacts are remote, register mirrors of its files (the cache
    folder) and of its checkpoint folder (artifacts ``checkpoints/``); None for a local run."""
    from mlflow.tracking import MlflowClient

    info = MlflowClient(tracking_uri).get_run(run_id).info
    if is_local(info.artifact_uri):
        return None
    files = register(Mirror(info.artifact_uri, tracking_uri, cache_dir(run_id)))
    kept = Mirror(info.artifact_uri, tracking_uri, Path(checkpoint_dir), prefix="checkpoints")
    return files, register(kept)


def uploaded(path: Path) -> None:
    """Upload a file just written, when it lies in a mirrored folder (else nothing)."""
    mirror = mirror_of(path)
    if mirror is not None:
        mirror.upload(Path(path))


def removed(path: Path) -> None:
    """Remove from the store a file just removed locally, when it lies in a mirror."""
    mirror = mirror_of(path)
    if mirror is not None:
        mirror.delete(Path(path))
