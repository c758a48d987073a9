"""CelebA (Liu et al. 2015): 202,599 aligned face images with 40 binary attributes.

The pool is every image of ``list_attr_celeba.txt`` in file order (or a seeded subset
of them); the label is one attribute (``Smiling`` by default) and the 40 attributes are
the dataset's properties for property inference. Files are read in torchvision's
layout, parsed here (torchvision's class would md5-check them on every load):

```
<root>/celeba/img_align_celeba/000001.jpg ... 202599.jpg   (178x218 aligned faces)
<root>/celeba/list_attr_celeba.txt    count, 40 names, then "<file> <40 values 1/-1>"
<root>/celeba/list_eval_partition.txt (torchvision's split; not used: the pool is all)
```

The resized pool is cached as ``<root>/celeba/mia_bench_pool_<S>px_<subset>.npz`` when
that folder is writable (see :mod:`mia_bench.data.image_files`): the first load decodes
the JPEGs (minutes for all of them), later loads read the cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mia_bench.data.cifar import ImageMembershipDataModule
from mia_bench.data.download import missing_file_error
from mia_bench.data.image_files import cached_pool, load_images
from mia_bench.data.membership import Pool

CELEBA_URL = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
CELEBA_ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald",
    "Bangs", "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose",
    "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair",
    "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
    "Wearing_Necklace", "Wearing_Necktie", "Young",
)  # fmt: skip
"""The 40 attributes, in the order of ``list_attr_celeba.txt``."""


def read_attributes(path: Path) -> tuple[list[str], np.ndarray]:
    """Parse ``list_attr_celeba.txt``.

    Args:
        path: the file: its count, the 40 attribute names, then one line per image
            ``<file> <40 values of 1 or -1>``.

    Returns:
        ``(files, attributes)``: the image file names, and ``bool[N, 40]`` (True for 1).

    Raises:
        ValueError: if the file is not in this format or names other attributes.
    """
    with open(path) as f:
        count = int(f.readline())
        names = tuple(f.readline().split())
        rows = [line.split() for line in f if line.strip()]
    if names != CELEBA_ATTRIBUTES or len(rows) != count:
        raise ValueError(
            f"{path} is not CelebA's attribute list: expected {count} rows of the 40 "
            f"attributes {list(CELEBA_ATTRIBUTES)}, got {len(rows)} rows of {list(names)}. "
            "Replace it with the original list_attr_celeba.txt."
        )
    values = np.array([row[1:] for row in rows], dtype=np.int8)  # [N, 40] of 1/-1
    return [row[0] for row in rows], values > 0


def subset_indices(total: int, max_examples: int | None, seed: int) -> np.ndarray:
    """A seeded subset of ``range(total)`` of at most ``max_examples``, in increasing order.

    >>> subset_indices(5, None, 0).tolist()
    [0, 1, 2, 3, 4]
    >>> a = subset_indices(1000, 3, seed=1); a.tolist() == sorted(a.tolist()), len(a)
    (True, 3)
    """
    if max_examples is None or max_examples >= total:
        return np.arange(total)
    chosen = np.random.default_rng(seed).choice(total, size=max_examples, replace=False)
    return np.sort(chosen)


class CelebA(ImageMembershipDataModule):
    """CelebA faces, one binary attribute as the label, the 40 attributes as properties.

    Images are center-cropped from 178x218 to 178x178 then resized to ``image_size``
    (PIL bilinear, antialiased). Normalization uses mean = std = (0.5, 0.5, 0.5) (pixels
    mapped to [-1, 1]), a common choice for CelebA; nothing is computed at run time.

    Args:
        target_attribute: the attribute used as the label (0/1), one of
            :data:`CELEBA_ATTRIBUTES`.
        image_size: side S of the square images; ``input_shape`` is ``(3, S, S)``.
        max_examples: keep a seeded subset of this many images (None: all 202,599).
        subset_seed: seed of that subset, independent of ``split_seed`` and
            ``run_index`` (every run of a group sees the same pool); the subset keeps
            file order.
        **kwargs: the arguments of :class:`ImageMembershipDataModule` (root, augment,
            run_index, num_runs, pkeep, split_seed, batch_size, download...).
            ``download=True`` fetches missing files with
            ``torchvision.datasets.CelebA`` (Google Drive; needs ``gdown``).

    Raises:
        ValueError: on an unknown ``target_attribute`` (the message lists the 40 names),
            or a ``max_examples`` / ``image_size`` below 1.
    """

    num_classes = 2
    input_shape = (3, 32, 32)
    base_folder = "celeba"

    def __init__(
        self,
        target_attribute: str = "Smiling",
        image_size: int = 32,
        max_examples: int | None = None,
        subset_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if target_attribute not in CELEBA_ATTRIBUTES:
            raise ValueError(
                f"unknown CelebA attribute {target_attribute!r}: set --data.target_attribute "
                f"to one of {list(CELEBA_ATTRIBUTES)}"
            )
        if image_size < 1 or (max_examples is not None and max_examples < 1):
            raise ValueError(
                f"image_size={image_size} and max_examples={max_examples} must be >= 1"
            )
        self.target_attribute = target_attribute
        self.image_size = image_size
        self.max_examples = max_examples
        self.subset_seed = subset_seed
        self.input_shape = (3, image_size, image_size)
        self._attributes: np.ndarray | None = None

    @property
    def folder(self) -> Path:
        """``<root>/celeba``, torchvision's folder."""
        return Path(self.root) / self.base_folder

    @property
    def cache_path(self) -> Path:
        """The pool cache, keyed by image size and subset."""
        subset = (
            "all" if self.max_examples is None else f"{self.max_examples}_seed{self.subset_seed}"
        )
        return self.folder / f"mia_bench_pool_{self.image_size}px_{subset}.npz"

    def load_pool(self) -> Pool:
        arrays = cached_pool(self.cache_path, self.image_size, self._build)
        self._attributes = arrays["attributes"].astype(bool)  # [N, 40]
        column = CELEBA_ATTRIBUTES.index(self.target_attribute)
        labels = self._attributes[:, column].astype(np.int64)  # [N]
        return Pool(inputs=arrays["images"], labels=labels)

    def dataset_properties(self) -> dict[str, np.ndarray]:
        """The 40 attributes of the pool's images, ``{name: int64[N]}`` of 0/1."""
        _ = self.pool  # loads the attributes with the pool
        assert self._attributes is not None
        return {
            name: self._attributes[:, i].astype(np.int64)
            for i, name in enumerate(CELEBA_ATTRIBUTES)
        }

    def _build(self) -> dict[str, np.ndarray]:
        """Decode the pool from the files: ``images``, ``attributes`` and ``files``."""
        self._ensure_files()
        files, attributes = read_attributes(self.folder / "list_attr_celeba.txt")
        chosen = subset_indices(len(files), self.max_examples, self.subset_seed)  # [N]
        paths = [self._image_path(files[i]) for i in chosen]
        return {
            "images": load_images(paths, len(paths), self.image_size),  # [N, S, S, 3]
            "attributes": attributes[chosen],  # [N, 40] bool
            "files": np.array([files[i] for i in chosen]),  # [N] str
        }

    def _image_path(self, name: str) -> Path:
        path = self.folder / "img_align_celeba" / name
        if not path.is_file():
            raise missing_file_error(path, CELEBA_URL, hint=self._hint())
        return path

    def _ensure_files(self) -> None:
        """Download with torchvision if asked and needed; else raise a clear error."""
        needed = [self.folder / "list_attr_celeba.txt", self.folder / "img_align_celeba"]
        missing = [p for p in needed if not p.exists()]
        if missing and self.download:
            self._download()
            missing = [p for p in needed if not p.exists()]
        if missing:
            raise missing_file_error(missing[0], CELEBA_URL, hint=self._hint())

    def _download(self) -> None:
        import torchvision.datasets as tvd

        try:
            tvd.CelebA(str(self.root), split="all", download=True)
        except Exception as err:  # gdown missing, Google Drive quota, bad md5...
            raise RuntimeError(
                f"downloading CelebA into {self.folder} with torchvision.datasets.CelebA "
                f"(from Google Drive) failed: {err!r}. Google Drive often refuses it "
                f"(daily quota); install gdown if missing, or download the files by hand "
                f"from {CELEBA_URL}. {self._hint()}"
            ) from err

    def _hint(self) -> str:
        return (
            f"CelebA is read in torchvision's layout: {self.folder}/list_attr_celeba.txt "
            f"and the extracted {self.folder}/img_align_celeba/*.jpg (from "
            "img_align_celeba.zip). --data.download true fetches them with "
            "torchvision.datasets.CelebA from Google Drive; the files are also linked "
            f"from {CELEBA_URL}."
        )
