"""``mia-bench fit|validate|test --help`` without importing Lightning (after the first time).

The help of Lightning's subcommands is made by LightningCLI from the signatures of the
model, data and callback classes, which takes importing Lightning, torch and MLflow
(about 10 s). The text is rendered once, stored in the user's cache folder
(``$MIA_BENCH_CACHE``, else ``$XDG_CACHE_HOME/mia-bench``, else ``~/.cache/mia-bench``)
under a key of everything it depends on (the sizes and times of mia-bench's own source
and config files, the versions of Lightning, jsonargparse and torch, the terminal width),
and printed from there afterwards. A ``fit`` stores the texts on its way (its parser is
already built), so after the first run every ``--help`` answers at once.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import shutil
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

PACKAGE = Path(__file__).parent
HELP_ARGS = ("-h", "--help")
SUBCOMMANDS = ("fit", "validate", "test")  # LightningCLI's subcommands of mia-bench
LIBRARIES = ("lightning", "jsonargparse", "torch", "mlflow")


def help_request(argv: list[str], subcommands: tuple[str, ...]) -> str | None:
    """The subcommand whose plain help ``argv`` asks for (``["fit", "--help"]``), else None.

    >>> help_request(["fit", "-h"], ("fit",)), help_request(["fit", "-c", "x", "-h"], ("fit",))
    ('fit', None)
    """
    if len(argv) == 2 and argv[0] in subcommands and argv[1] in HELP_ARGS:
        return argv[0]
    return None


def cache_dir() -> Path:
    """Where rendered help texts are kept."""
    if os.environ.get("MIA_BENCH_CACHE"):
        return Path(os.environ["MIA_BENCH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mia-bench"


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def terminal_width() -> int:
    """The width argparse formats help for (``COLUMNS``, else the terminal's)."""
    return shutil.get_terminal_size().columns


@functools.cache
def _code_key() -> str:
    """What the help texts depend on besides the width: mia-bench's source and config
    files (sizes and times) and the library versions; computed once per process (a fit
    warms the cache at every start)."""
    key = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*")):
        if path.suffix in (".py", ".yaml") and "__pycache__" not in path.parts:
            stat = path.stat()
            key.update(f"{path.relative_to(PACKAGE)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    for name in LIBRARIES:
        key.update(f"{name}={_version(name)}\n".encode())
    return key.hexdigest()


def cache_path(subcommand: str, width: int | None = None) -> Path:
    """The cache file of one subcommand's help, named by the key of what it depends on."""
    width = terminal_width() if width is None else width
    key = hashlib.sha256(f"{_code_key()}|{sys.version}|{subcommand}|{width}".encode())
    return cache_dir() / "help" / f"{subcommand}-{key.hexdigest()[:20]}.txt"


def cached_help(subcommand: str) -> str | None:
    """The stored help of ``subcommand`` for the current code and width, or None."""
    try:
        return cache_path(subcommand).read_text()
    except OSError:
        return None


def store_help(subcommand: str, text: str, width: int | None = None) -> None:
    """Keep a rendered help text (silently not, where the cache folder is not writable)."""
    path = cache_path(subcommand, width)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)


def warm_help(parser: object) -> None:
    """Store the help of every Lightning subcommand from a LightningCLI parser already built.

    Costs a few hundredths of a second each; does nothing for texts stored already or a
    parser without subcommands.
    """
    try:
        parsers = parser._subcommands_action._name_parser_map  # type: ignore[attr-defined]
    except AttributeError:
        return
    for subcommand in SUBCOMMANDS:
        if subcommand in parsers and cached_help(subcommand) is None:
            store_help(subcommand, parsers[subcommand].format_help())


def render_help(run: Callable[[], object]) -> str:
    """What ``run`` (a LightningCLI asked for ``--help``) prints before it exits."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        run()
    return out.getvalue()
