"""Views of an example: train-time augmentations and the query views of signals.

**Train-time augmentations** (Rahmani et al. 2026: each one lowers LiRA's TPR at 0.1% FPR, their
combination most) are named and composable; :func:`train_augmentation` turns a list of
names into one picklable callable on uint8 ``[H, W, C]`` images:

* ``autoaugment``: torchvision's ``AutoAugment(AutoAugmentPolicy.CIFAR10)`` (Cubuk et
  al. 2019), two ops of a random sub-policy;
* ``crop``: pad 4 pixels by reflection (``cv2.BORDER_REFLECT_101``, which is
  TensorFlow's ``REFLECT`` used in LiRA's ``train.py``), then a random crop back to the
  image size: a uniform shift in ``-4..4`` along each axis;
* ``mirror``: horizontal flip with probability 0.5;
* ``cutout``: one 16x16 hole filled with 0 (albumentations' ``CoarseDropout``; the hole
  always lies inside the image);
* ``all``: the four together ("all techniques" of Rahmani et al. 2026).

They always run in the order of :data:`TRAIN_AUGMENTATIONS`, whatever the order of the
names: autoaugment, crop, mirror, cutout. This is the order of AutoAugment's reference
code (policy, then the baseline pad-crop and flip, then Cutout): the learned policy
sees the image it was searched on; crop and flip commute in distribution (the shift
set is symmetric), so their order only matters for exact replay; cutout comes last so
that its hole stays exactly 16x16 of the fill value instead of being recoloured by the
policy (Invert, Solarize...) or shifted partly out of the image by the crop.

**Query views** are deterministic functions of a batch ``[B, C, H, W]`` used when
recording signals; view 0 is always ``plain``. LiRA (Carlini et al. 2022, Section
VI-A; ``mi_lira_2021/inference.py``) queries the model on the image and its mirror,
each reflect-padded by ``s`` pixels and cropped at every offset: ``2 (2s + 1)^2`` views.
The names here:

* ``plain``, ``mirror``;
* ``shift_<dx>_<dy>`` for ``dx, dy`` in ``-4..4``: the content moves ``dx`` pixels right
  and ``dy`` pixels down, the uncovered border is filled by reflection (as in LiRA);
  ``shift_0_0`` is ``plain``;
* ``mirror_shift_<dx>_<dy>``: ``shift_<dx>_<dy>`` of the mirror image (LiRA mirrors
  first, then shifts), which equals ``mirror(shift_<-dx>_<dy>(x))``.

Presets (:data:`QUERY_VIEW_PRESETS`, accepted by :func:`query_views`) are
``plain``, ``plain,mirror``, and ``lira<A>`` = :func:`lira_views` ``(s)`` for
``s = 0..4``: ``lira2``, ``lira18``, ``lira50``, ``lira98``, ``lira162``.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import AutoAugment, AutoAugmentPolicy

from mia_bench.extras import require

# --- train-time augmentations ----------------------------------------------------------

TRAIN_AUGMENTATIONS: tuple[str, ...] = ("autoaugment", "crop", "mirror", "cutout")
"""Every train-time augmentation, in the order they are applied."""
AUGMENTATION_ALIASES: dict[str, tuple[str, ...]] = {"all": TRAIN_AUGMENTATIONS}
CROP_PADDING = 4
CUTOUT_SIZE = 16


def resolve_augmentations(names: Sequence[str]) -> tuple[str, ...]:
    """Augmentation names (aliases expanded, duplicates dropped) in application order.

    Raises:
        ValueError: on a name that is neither an augmentation nor an alias.

    >>> resolve_augmentations(["mirror", "crop"])
    ('crop', 'mirror')
    >>> resolve_augmentations(["all"])
    ('autoaugment', 'crop', 'mirror', 'cutout')
    """
    if isinstance(names, str):
        names = [names]
    unknown = [n for n in names if n not in TRAIN_AUGMENTATIONS and n not in AUGMENTATION_ALIASES]
    if unknown:
        raise ValueError(
            f"unknown augmentations {unknown}; valid names: {list(TRAIN_AUGMENTATIONS)} "
            f"and the aliases {sorted(AUGMENTATION_ALIASES)}"
        )
    wanted = {m for n in names for m in AUGMENTATION_ALIASES.get(n, (n,))}
    return tuple(n for n in TRAIN_AUGMENTATIONS if n in wanted)


def _albumentations(names: tuple[str, ...]) -> ModuleType:
    """albumentations, which the per-image crop, mirror and cutout need (the batch ones do not).

    ``mia_bench``'s import has set ``NO_ALBUMENTATIONS_UPDATE`` (no version check online).
    """
    ops = "/".join(n for n in names if n != "autoaugment")
    what = f"the per-image {ops} augmentation (pools served by a DataLoader: with autoaugment, "
    what += "DP-SGD or several devices)"
    return require("albumentations", extra="augment", what=what)


def _albumentations_ops(names: tuple[str, ...], height: int, width: int) -> list[Any]:
    A = _albumentations(names)
    import cv2  # OpenCV is a dependency of albumentations

    ops: list[Any] = []
    if "crop" in names:
        ops += [
            A.Pad(padding=CROP_PADDING, border_mode=cv2.BORDER_REFLECT_101),
            A.RandomCrop(height=height, width=width),
        ]
    if "mirror" in names:
        ops.append(A.HorizontalFlip(p=0.5))
    if "cutout" in names:
        ops.append(
            A.CoarseDropout(
                num_holes_range=(1, 1),
                hole_height_range=(CUTOUT_SIZE, CUTOUT_SIZE),
                hole_width_range=(CUTOUT_SIZE, CUTOUT_SIZE),
                fill=0,
                p=1.0,
            )
        )
    return ops


class TrainAugmentation:
    """Named augmentations of one uint8 ``[H, W, C]`` image, in :data:`TRAIN_AUGMENTATIONS` order.

    Randomness: ``autoaugment`` draws from torch's global generator; the albumentations
    ops from their own generator, seeded from ``torch.initial_seed()`` the first time the
    object is called in a process. DataLoader workers (and Lightning's
    ``seed_everything(workers=True)``) give each worker its own torch seed, so workers
    draw different augmentations, and a run seeded the same way draws the same ones.
    Picklable: the pipeline is rebuilt after unpickling. Crop, mirror and cutout need
    albumentations (``pip install 'mia-bench[augment]'``) from the first call on; their
    batch twins (:mod:`mia_bench.batch_augment`) and ``autoaugment`` need none.

    Args:
        names: augmentation names or aliases (see :func:`resolve_augmentations`).
        image_size: ``(H, W)`` of the images (the crop's output size).
    """

    def __init__(self, names: Sequence[str], image_size: tuple[int, int] = (32, 32)) -> None:
        self.names = resolve_augmentations(names)
        self.image_size = tuple(image_size)
        self._autoaugment = (
            AutoAugment(AutoAugmentPolicy.CIFAR10) if "autoaugment" in self.names else None
        )
        self._albumentations: Any = None  # albumentations.Compose, built on first use
        self._owner: tuple[int, int] | None = None  # (pid, torch seed) it was seeded for

    def __repr__(self) -> str:
        return f"TrainAugmentation({list(self.names)}, image_size={self.image_size})"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_albumentations"], state["_owner"] = None, None
        return state

    def _pipeline(self) -> Any:
        """The albumentations ``Compose`` of the names, seeded for this process."""
        owner = (os.getpid(), torch.initial_seed())
        if self._albumentations is None or self._owner != owner:
            ops = _albumentations_ops(self.names, *self.image_size)
            compose = _albumentations(self.names).Compose
            self._albumentations = compose(ops, seed=owner[1] % 2**32)
            self._owner = owner
        return self._albumentations

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if self._autoaugment is not None:
            x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)  # [C, H, W]
            image = self._autoaugment(x).permute(1, 2, 0).numpy()  # [H, W, C] uint8
        if self.names != ("autoaugment",):
            image = self._pipeline()(image=np.ascontiguousarray(image))["image"]
        return np.ascontiguousarray(image)


def train_augmentation(
    names: Sequence[str], image_size: tuple[int, int] = (32, 32)
) -> Callable[[np.ndarray], np.ndarray] | None:
    """The train-time augmentation made of ``names``; ``None`` for no names.

    Args:
        names: e.g. ``["crop", "mirror"]`` or ``["all"]``; order does not matter.
        image_size: ``(H, W)`` of the images.

    Returns:
        A picklable callable from uint8 ``[H, W, C]`` to uint8 ``[H, W, C]``, or None.

    Raises:
        ValueError: on an unknown name (the message lists the valid ones).

    >>> train_augmentation([]) is None
    True
    >>> train_augmentation(["mirror", "crop"])
    TrainAugmentation(['crop', 'mirror'], image_size=(32, 32))
    """
    names = resolve_augmentations(names)
    return TrainAugmentation(names, image_size) if names else None


# --- query views ------------------------------------------------------------------------

MAX_QUERY_SHIFT = 4
"""Largest shift of the registered ``shift_*`` views (the training crop's padding)."""


def _check_images(x: torch.Tensor, view: str) -> None:
    if x.ndim != 4:
        raise ValueError(
            f"the {view} view needs image batches [B, C, H, W], got shape {tuple(x.shape)}"
        )


def _plain(x: torch.Tensor) -> torch.Tensor:
    return x


def _mirror(x: torch.Tensor) -> torch.Tensor:
    _check_images(x, "mirror")
    return x.flip(-1)  # [B, C, H, W]


def shift_images(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Move the content of a batch ``dx`` pixels right and ``dy`` down, reflecting the border.

    Reflect-pads by ``|dx|`` columns and ``|dy|`` rows on each side and crops the
    original size, as LiRA does: ``out[..., i, j] = reflect(x)[..., i - dy, j - dx]``.

    Args:
        x: ``[B, C, H, W]`` float images.
        dx, dy: integer shifts, ``|dx| < W`` and ``|dy| < H``.

    Returns:
        ``[B, C, H, W]``.

    >>> x = torch.arange(4.0).view(1, 1, 1, 4)
    >>> shift_images(x, 1, 0).flatten().tolist()  # reflect: x[1] fills the left border
    [1.0, 0.0, 1.0, 2.0]
    """
    _check_images(x, "shift")
    if dx == 0 and dy == 0:
        return x
    h, w = x.shape[-2:]
    pw, ph = abs(dx), abs(dy)
    padded = F.pad(x, (pw, pw, ph, ph), mode="reflect")  # [B, C, H + 2|dy|, W + 2|dx|]
    top, left = ph - dy, pw - dx
    return padded[..., top : top + h, left : left + w]  # [B, C, H, W]


def _shift(x: torch.Tensor, dx: int, dy: int, mirror: bool) -> torch.Tensor:
    return shift_images(_mirror(x) if mirror else x, dx, dy)


def shift_name(dx: int, dy: int, mirror: bool = False) -> str:
    """Name of a shift view.

    >>> shift_name(-1, 2), shift_name(0, 0, mirror=True)
    ('shift_-1_2', 'mirror_shift_0_0')
    """
    return f"{'mirror_' if mirror else ''}shift_{dx}_{dy}"


def _shift_views() -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    span = range(-MAX_QUERY_SHIFT, MAX_QUERY_SHIFT + 1)
    return {
        shift_name(dx, dy, m): functools.partial(_shift, dx=dx, dy=dy, mirror=m)
        for m in (False, True)
        for dy in span
        for dx in span
    }


QUERY_VIEWS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "plain": _plain,
    "mirror": _mirror,
    **_shift_views(),
}


def lira_views(shift: int = 1, stride: int = 1, mirror: bool = True) -> tuple[str, ...]:
    """LiRA's query views: every shift in ``-shift..shift`` (step ``stride``), and mirrored.

    The set of ``get_loss(shift, reflect=mirror, stride)`` in LiRA's ``inference.py``,
    ordered so that the first views are always ``plain`` (then ``mirror``), then the
    shifts in raster order (``dy`` outer, ``dx`` inner), then the mirrored shifts.
    ``plain`` is included even when ``stride`` skips the zero shift.

    Args:
        shift: largest shift, at most :data:`MAX_QUERY_SHIFT`.
        stride: step between shifts.
        mirror: add the mirrored views.

    >>> lira_views(0)
    ('plain', 'mirror')
    >>> len(lira_views(1)), lira_views(1)[:4]
    (18, ('plain', 'mirror', 'shift_-1_-1', 'shift_0_-1'))
    """
    if not 0 <= shift <= MAX_QUERY_SHIFT or stride < 1:
        raise ValueError(
            f"need 0 <= shift <= {MAX_QUERY_SHIFT} and stride >= 1, got {shift=}, {stride=}"
        )
    span = range(-shift, shift + 1, stride)
    shifts = [(dx, dy) for dy in span for dx in span if (dx, dy) != (0, 0)]
    mirrors = (False, True) if mirror else (False,)
    head = tuple("mirror" if m else "plain" for m in mirrors)
    return head + tuple(shift_name(dx, dy, m) for m in mirrors for dx, dy in shifts)


QUERY_VIEW_PRESETS: dict[str, tuple[str, ...]] = {
    "plain": ("plain",),
    "plain,mirror": ("plain", "mirror"),
    **{f"lira{len(lira_views(s))}": lira_views(s) for s in range(MAX_QUERY_SHIFT + 1)},
}
_SHIFT_PATTERN = re.compile(r"^(mirror_)?shift_-?\d+_-?\d+$")


def resolve_views(names: str | Sequence[str]) -> tuple[str, ...]:
    """View names with presets expanded; a string is split at commas first.

    >>> resolve_views("plain,mirror")
    ('plain', 'mirror')
    >>> len(resolve_views("lira18")), resolve_views(["lira2", "shift_1_0"])
    (18, ('plain', 'mirror', 'shift_1_0'))
    """
    if isinstance(names, str):
        names = names.split(",") if names not in QUERY_VIEW_PRESETS else [names]
    out: list[str] = []
    for name in names:
        out += QUERY_VIEW_PRESETS.get(name, (name,))
    return tuple(out)


def query_views(names: str | Sequence[str]) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """Look up query views by name or preset (see the module docstring); view 0 is ``plain``.

    >>> len(query_views(["plain", "mirror"])), len(query_views("lira18"))
    (2, 18)
    """
    names = resolve_views(names)
    unknown = [n for n in names if n not in QUERY_VIEWS]
    if unknown:
        hint = ""
        if any(_SHIFT_PATTERN.match(n) for n in unknown):
            hint = f" (shifts are registered up to {MAX_QUERY_SHIFT} pixels)"
        raise ValueError(
            f"unknown query views {unknown}{hint}; available: plain, mirror, "
            f"shift_<dx>_<dy> and mirror_shift_<dx>_<dy> for dx, dy in "
            f"-{MAX_QUERY_SHIFT}..{MAX_QUERY_SHIFT}, and the presets {list(QUERY_VIEW_PRESETS)}"
        )
    if not names or names[0] != "plain":
        raise ValueError(f"view 0 must be 'plain', got {list(names)}")
    return [QUERY_VIEWS[n] for n in names]
