"""Image files to a uint8 pool, and the ``.npz`` cache that spares decoding them twice.

Decoding and resizing thousands of JPEGs takes minutes (CelebA: 202,599 files), so the
resized pool is written once as an ``.npz`` next to the data and read back on every
later load (a second). The cache is written only where the folder is writable
(:func:`mia_bench.data.download.is_writable_folder`), atomically (a temporary file in
the same folder, then ``os.replace``), so a killed run never leaves a cache that reads
as whole and two runs building it at once never read each other's half-written file.
A cache that does not read whole (truncated, empty, damaged), or that holds images of
another size, is rebuilt. Delete
the file to force a rebuild (for example after changing the source images).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from mia_bench.data.download import is_writable_folder, read_npz_cache

log = logging.getLogger(__name__)
ImageSource = Path | str | Image.Image
"""A path of an image file, or an image already decoded."""


def square_image(source: ImageSource, size: int) -> np.ndarray:
    """The largest centered square of an image, resized to ``size x size`` RGB.

    Cropping the square first then resizing equals resizing the shorter side to
    ``size`` then center cropping, with one resampling instead of two. The resize is
    PIL's bilinear filter, which antialiases when it shrinks.

    Args:
        source: an image file's path, or a PIL image.
        size: side of the output square, in pixels.

    Returns:
        ``uint8[size, size, 3]``.

    >>> image = Image.new("RGB", (178, 218), (255, 0, 0))  # CelebA's aligned size
    >>> square_image(image, 32).shape, square_image(image, 32)[0, 0].tolist()
    ((32, 32, 3), [255, 0, 0])
    """
    if isinstance(source, Image.Image):
        return _square(source, size)
    with Image.open(source) as image:
        return _square(image, size)


def _square(image: Image.Image, size: int) -> np.ndarray:
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    square = image.convert("RGB").crop((left, top, left + side, top + side))
    return np.asarray(square.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def load_images(sources: Iterable[ImageSource], count: int, size: int) -> np.ndarray:
    """Decode, square-crop and resize ``count`` images into one array.

    Args:
        sources: ``count`` image paths or PIL images, in pool order.
        count: how many ``sources`` yields (the array is allocated once).
        size: side of each output square.

    Returns:
        ``uint8[count, size, size, 3]``.
    """
    images = np.empty((count, size, size, 3), dtype=np.uint8)  # [N, S, S, 3]
    n = -1
    for n, source in enumerate(sources):
        images[n] = square_image(source, size)
    if n + 1 != count:
        raise ValueError(f"expected {count} images, got {n + 1}")
    return images


def read_cache(path: Path, image_size: int) -> dict[str, np.ndarray] | None:
    """The arrays of a pool cache, or None if it is absent, unreadable or of another size.

    Args:
        path: the ``.npz`` file.
        image_size: the side its ``images`` (``uint8[N, S, S, 3]``) must have; every
            other array must have N rows too.
    """
    arrays = read_npz_cache(path)
    if arrays is None:
        return None
    images = arrays.get("images")
    if images is None or images.shape[1:] != (image_size, image_size, 3):
        log.warning("ignoring pool cache %s: not %dpx images; rebuilding it", path, image_size)
        return None
    if any(len(a) != len(images) for a in arrays.values()):
        log.warning("ignoring pool cache %s: its arrays differ in length; rebuilding it", path)
        return None
    return arrays


def write_cache(path: Path, arrays: dict[str, np.ndarray]) -> bool:
    """Write ``arrays`` to ``path`` atomically if its folder is writable.

    Returns:
        Whether the cache was written: False for a read-only folder or a failed write
        (logged), which leaves no file behind.
    """
    if not is_writable_folder(path.parent):
        log.info("not caching the pool: %s is not writable", path.parent)
        return False
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except OSError as err:  # disk full...: the cache only saves time
        log.warning("could not write the pool cache %s (%s); going on without it", path, err)
        return False
    finally:
        Path(tmp).unlink(missing_ok=True)
    return True


def cached_pool(
    path: Path, image_size: int, build: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Read the pool cache at ``path``, or ``build()`` the arrays and cache them.

    Args:
        path: the ``.npz`` cache file.
        image_size: side of the cached ``images``.
        build: makes the arrays (``images`` and any others) from the source files.

    Returns:
        The arrays, from the cache when it is there and valid.
    """
    arrays = read_cache(path, image_size)
    if arrays is not None:
        return arrays
    log.info("decoding the images (once): the pool will be cached in %s", path)
    arrays = build()
    write_cache(path, arrays)
    return arrays
