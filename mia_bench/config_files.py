"""The configs that ship with mia-bench: found by name, copied out for editing.

The YAML files live in the package (``mia_bench/configs/``; a checkout also shows them as
``lightning_configs/``), so a wheel install has them too. ``-c quickstart``,
``-c defense/dp_sgd`` and ``-c lightning_configs/quickstart.yaml`` all name a packaged
config when no such file exists where the command runs; an existing file always wins.
``mia-bench configs DIR`` copies them out, ``mia-bench notebook DIR`` the notebook.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Sequence
from pathlib import Path

from mia_bench.errors import UserError

PACKAGED = Path(__file__).with_name("configs")
NOTEBOOK = Path(__file__).with_name("notebooks") / "compare.ipynb"
_PREFIX = "lightning_configs/"
_CONFIG_FLAGS = ("-c", "--config")


def packaged_names() -> list[str]:
    """Names of the packaged configs, e.g. ``quickstart``, ``defense/dp_sgd``.

    >>> {"quickstart", "defense/dp_sgd"} <= set(packaged_names())
    True
    """
    return sorted(str(p.relative_to(PACKAGED).with_suffix("")) for p in PACKAGED.rglob("*.yaml"))


def config_path(name: str) -> str:
    """A config file as given, if it exists; else the packaged config it names.

    Raises:
        UserError: neither a file nor a packaged config.

    >>> config_path("quickstart") == str(PACKAGED / "quickstart.yaml")
    True
    """
    if Path(name).exists():
        return name
    stem = name.removeprefix(_PREFIX).removesuffix(".yaml")
    packaged = PACKAGED / f"{stem}.yaml"
    if packaged.is_file() and ".." not in Path(stem).parts:
        return str(packaged)
    raise UserError(
        f"config {name!r}: no such file, and no packaged config of that name; "
        "`mia-bench configs --list` names them (e.g. -c quickstart)"
    )


def resolve_configs(argv: Sequence[str]) -> list[str]:
    """``argv`` with every ``-c``/``--config`` value passed through :func:`config_path`.

    >>> resolve_configs(["-c", "quickstart", "--trainer.max_epochs=1"])[1].endswith(
    ...     "configs/quickstart.yaml")
    True
    """
    out, args = [], list(argv)
    for i, arg in enumerate(args):
        flag, _, value = arg.partition("=")
        if flag == "--config" and value:
            arg = f"--config={config_path(value)}"
        elif i > 0 and args[i - 1] in _CONFIG_FLAGS and not arg.startswith("-"):
            arg = config_path(arg)
        out.append(arg)
    return out


def _first_comment(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def copy_tree(source: Path, target: Path, force: bool) -> list[Path]:
    """Copy ``source``'s files under ``target``; refuse to overwrite without ``force``."""
    files = [p for p in sorted(source.rglob("*")) if p.is_file() and "__pycache__" not in p.parts]
    clashes = [target / p.relative_to(source) for p in files]
    clashes = [p for p in clashes if p.exists()]
    if clashes and not force:
        raise UserError(
            f"{clashes[0]} exists ({len(clashes)} files would be overwritten): copy into "
            "another folder, or pass --force"
        )
    for p in files:
        dest = target / p.relative_to(source)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, dest)
    return files


_CONFIGS_HELP = (
    "Copy mia-bench's packaged configs into DIR for editing, or list them. Any command "
    "also finds them by name: mia-bench fit -c quickstart."
)
_NOTEBOOK_HELP = (
    "Copy the recipe-comparison notebook (compare.ipynb) into DIR. Its libraries: "
    "pip install 'mia-bench[notebook]'."
)


def _copy_args(prog: str, description: str, default: str, argv: list[str], listing: bool):
    """The arguments of a command that copies packaged files into DIR."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("dir", nargs="?", default=default, help="default: %(default)s")
    if listing:
        parser.add_argument("--list", action="store_true", help="name each config and what it is")
    parser.add_argument("--force", action="store_true", help="overwrite files already there")
    return parser.parse_args(argv)


def configs_main(argv: list[str]) -> int:
    """``mia-bench configs [DIR]``: copy the packaged configs out, or list them."""
    args = _copy_args("mia-bench configs", _CONFIGS_HELP, "lightning_configs", argv, True)
    if args.list:
        names = packaged_names()
        width = max(map(len, names))
        for name in names:
            print(f"{name:<{width}}  {_first_comment(PACKAGED / f'{name}.yaml')}")
        return 0
    files = copy_tree(PACKAGED, Path(args.dir), args.force)
    quickstart = Path(args.dir) / "quickstart.yaml"
    print(f"copied {len(files)} configs to {args.dir}/: mia-bench fit -c {quickstart}")
    return 0


def notebook_main(argv: list[str]) -> int:
    """``mia-bench notebook [DIR]``: copy the comparison notebook out."""
    args = _copy_args("mia-bench notebook", _NOTEBOOK_HELP, ".", argv, False)
    target = Path(args.dir) / NOTEBOOK.name
    if target.exists() and not args.force:
        raise UserError(f"{target} exists: copy into another folder, or pass --force")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(NOTEBOOK, target)
    print(
        f"copied {target}: open it with `jupyter lab {target}` next to your mlruns/ "
        "(or set MIA_TRACKING_URI)"
    )
    return 0
