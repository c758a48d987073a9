"""Snacks: 6,745 photos of 20 snack foods, the Hugging Face dataset ``Matthijs/snacks``.

The photos come from Open Images (release 2017_11). The pool is the train (4,838),
validation (955) and test (952) splits, concatenated in that order; the label is the
index of the class name in :data:`SNACKS_CLASSES` (sorted, as the hub's ``ClassLabel``).
Two sources:

* an image folder (offline; the layout of the original ``snacks.tar.gz``)::

    <root>/train/<class name>/*.jpg   <root>/val/...   <root>/test/...

  (``validation`` is accepted for ``val``), read in class order then file-name order;
* the hub (``download=True`` and no folder): ``datasets.load_dataset("Matthijs/snacks",
  cache_dir=root)``, which needs the optional ``datasets`` package.

Images (smallest side 256 in the source) are resized so that their shorter side is
``image_size``, then center cropped to a square. The resized pool is cached as
``<root>/mia_bench_snacks_<source>_<S>px.npz`` when ``root`` is writable (see
:mod:`mia_bench.data.image_files`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mia_bench.data.cifar import ImageMembershipDataModule
from mia_bench.data.download import missing_file_error
from mia_bench.data.image_files import cached_pool, load_images
from mia_bench.data.membership import Pool

SNACKS_HUB = "Matthijs/snacks"
SNACKS_URL = "https://huggingface.co/datasets/Matthijs/snacks"
SNACKS_CLASSES: tuple[str, ...] = (
    "apple", "banana", "cake", "candy", "carrot", "cookie", "doughnut", "grape",
    "hot dog", "ice cream", "juice", "muffin", "orange", "pineapple", "popcorn",
    "pretzel", "salad", "strawberry", "waffle", "watermelon",
)  # fmt: skip
"""The 20 classes; label ``k`` is ``SNACKS_CLASSES[k]``."""
SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "val": ("val", "validation"),
    "test": ("test",),
}
"""Each split of the pool, in pool order, with the folder / hub names it goes by."""
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def class_index(name: str, where: object) -> int:
    """The label of a class name (``hot_dog`` is read as ``hot dog``).

    Raises:
        ValueError: for a name that is not a snack class; the message names ``where``
            it was found and lists the expected names.

    >>> class_index("hot_dog", "here"), class_index("apple", "here")
    (8, 0)
    """
    key = name.replace("_", " ")
    if key not in SNACKS_CLASSES:
        raise ValueError(
            f"unknown Snacks class {name!r} in {where}: expected class names "
            f"{list(SNACKS_CLASSES)}. Remove or rename it."
        )
    return SNACKS_CLASSES.index(key)


def split_folder(root: Path, split: str) -> Path:
    """The folder of one split under ``root`` (``val`` or ``validation`` for ``val``)."""
    for name in SPLITS[split]:
        if (root / name).is_dir():
            return root / name
    raise missing_file_error(
        root / split,
        SNACKS_URL,
        hint=f"The image folder needs {root}/train, {root}/val (or validation) and "
        f"{root}/test, each with one sub-folder per class; --data.download true loads "
        f"the hub dataset {SNACKS_HUB} instead (needs `pip install datasets`).",
    )


def folder_examples(root: Path) -> tuple[list[Path], np.ndarray]:
    """Image paths and ``int64[N]`` labels of an image folder, train then val then test."""
    paths: list[Path] = []
    labels: list[int] = []
    for split in SPLITS:
        folder = split_folder(root, split)
        classes = [d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")]
        for class_dir in sorted(classes, key=lambda d: (class_index(d.name, folder), d.name)):
            files = sorted(f for f in class_dir.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            paths += files
            labels += [class_index(class_dir.name, folder)] * len(files)
    return paths, np.array(labels, dtype=np.int64)


def import_datasets() -> Any:
    """The optional ``datasets`` package, or an ImportError that says what to do."""
    try:
        import datasets
    except ImportError as err:
        raise ImportError(
            f"loading {SNACKS_HUB} from the hub needs the Hugging Face `datasets` package: "
            "`pip install datasets`. Or use the image folder layout "
            "<root>/{train,val,test}/<class name>/*.jpg with --data.download false."
        ) from err
    return datasets


def hub_splits(root: Path) -> list[Any]:
    """The hub dataset's train, validation and test splits, downloaded into ``root``."""
    datasets = import_datasets()
    try:
        found = datasets.load_dataset(SNACKS_HUB, cache_dir=str(root))
    except Exception as err:  # no network, hub error...
        raise RuntimeError(
            f"loading {SNACKS_HUB} ({SNACKS_URL}) into {root} failed: {err!r}. Check the "
            "network, or use the image folder layout <root>/{train,val,test}/<class>/*.jpg."
        ) from err
    return [_hub_split(found, split) for split in SPLITS]


def _hub_split(found: Any, split: str) -> Any:
    for name in SPLITS[split]:
        if name in found:
            return found[name]
    raise KeyError(f"{SNACKS_HUB} has no split {split!r}; it has {list(found)}")


def hub_labels(split: Any) -> np.ndarray:
    """``int64[n]`` labels of a hub split, mapped through its ``ClassLabel`` names."""
    features = getattr(split, "features", None)
    names = features["label"].names if features is not None else SNACKS_CLASSES
    to_ours = np.array([class_index(name, SNACKS_HUB) for name in names], dtype=np.int64)
    return to_ours[np.asarray(split["label"], dtype=np.int64)]


class Snacks(ImageMembershipDataModule):
    """Snacks, 20 classes of food photos, resized to ``image_size`` squares.

    Normalized with ImageNet's mean and std (the photos are Open Images).

    Args:
        image_size: side S of the square images; ``input_shape`` is ``(3, S, S)``.
        **kwargs: the arguments of :class:`ImageMembershipDataModule` (root, augment,
            run_index, num_runs, pkeep, split_seed, batch_size, download...).
            ``download=True`` loads the hub dataset when ``root`` holds no image folder.
    """

    num_classes = 20
    input_shape = (3, 64, 64)
    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(self, image_size: int = 64, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if image_size < 1:
            raise ValueError(f"image_size={image_size} must be >= 1")
        self.image_size = image_size
        self.input_shape = (3, image_size, image_size)

    @property
    def source(self) -> str:
        """``folder`` if ``root`` holds the image folder or no download was asked, else ``hub``."""
        has_folder = (Path(self.root) / "train").is_dir()
        return "folder" if has_folder or not self.download else "hub"

    @property
    def cache_path(self) -> Path:
        """The pool cache, keyed by source and image size."""
        return Path(self.root) / f"mia_bench_snacks_{self.source}_{self.image_size}px.npz"

    def load_pool(self) -> Pool:
        build = self._from_folder if self.source == "folder" else self._from_hub
        arrays = cached_pool(self.cache_path, self.image_size, build)
        return Pool(inputs=arrays["images"], labels=arrays["labels"].astype(np.int64))

    def _from_folder(self) -> dict[str, np.ndarray]:
        paths, labels = folder_examples(Path(self.root))
        images = load_images(paths, len(paths), self.image_size)  # [N, S, S, 3]
        return {"images": images, "labels": labels}

    def _from_hub(self) -> dict[str, np.ndarray]:
        splits = hub_splits(Path(self.root))
        labels = np.concatenate([hub_labels(split) for split in splits])  # [N]
        images = load_images(_hub_images(splits), len(labels), self.image_size)
        return {"images": images, "labels": labels}


def _hub_images(splits: list[Any]) -> Iterator[Any]:
    """Each row's PIL image, decoded one at a time."""
    for split in splits:
        for row in split:
            yield row["image"]
