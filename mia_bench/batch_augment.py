"""Train-time augmentations of whole uint8 image batches, the twin of :mod:`mia_bench.augment`.

``crop``, ``mirror`` and ``cutout`` of :class:`mia_bench.augment.TrainAugmentation` done on
a batch ``uint8[B, H, W, C]`` at once, in the same order (crop, mirror, cutout) and with
the same distributions as albumentations 2.0.8 draws them per image:

* ``crop``: ``A.Pad(4, BORDER_REFLECT_101)`` then ``A.RandomCrop(H, W)``, whose corner in the
  padded image is ``int((2 * 4 + 1) * u)`` for ``u`` uniform in ``[0, 1)`` on each axis
  independently (``get_crop_coords``): uniform on ``0..8``, a shift uniform on ``-4..4``;
* ``mirror``: ``A.HorizontalFlip(p=0.5)``;
* ``cutout``: ``A.CoarseDropout`` with one 16x16 hole of 0 whose top-left corner is uniform
  on ``0..H-16`` x ``0..W-16`` (``integers(0, H - 16 + 1)``): always inside the image.

Crop and mirror are one gather of reflected row and column indices, so no padded copy
is made. Draws come from a CPU generator (the loader's per-``(seed, epoch)`` one) and
only the ``[B]`` parameters move to the images' device, so a batch is augmented the same
on every device. ``autoaugment`` has no batch form: its pools keep the per-image path.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mia_bench.augment import CROP_PADDING, CUTOUT_SIZE, resolve_augmentations

BATCH_AUGMENTATIONS: tuple[str, ...] = ("crop", "mirror", "cutout")
"""The augmentations with a batch form, in the order they are applied."""


def batchable(names: Sequence[str]) -> bool:
    """Whether every augmentation of ``names`` (aliases expanded) has a batch form.

    >>> batchable(["mirror", "crop"]), batchable(["all"])
    (True, False)
    """
    return set(resolve_augmentations(names)) <= set(BATCH_AUGMENTATIONS)


def reflect_101(position: torch.Tensor, size: int) -> torch.Tensor:
    """Positions ``-size < p < 2 size - 1`` folded into ``0..size-1`` as ``BORDER_REFLECT_101``.

    >>> reflect_101(torch.arange(-2, 6), 4).tolist()
    [2, 1, 0, 1, 2, 3, 2, 1]
    """
    position = position.abs()
    return torch.where(position > size - 1, 2 * (size - 1) - position, position)


class BatchAugmentation:
    """``crop``, ``mirror``, ``cutout`` of a batch ``uint8[B, H, W, C]`` (see the module docstring).

    Args:
        names: augmentation names (aliases expanded); each must be in
            :data:`BATCH_AUGMENTATIONS`.
        image_size: ``(H, W)`` of the images.

    Raises:
        ValueError: on ``autoaugment`` (it has no batch form), or cutout on images
            smaller than the hole.
    """

    def __init__(self, names: Sequence[str], image_size: tuple[int, int] = (32, 32)) -> None:
        self.names = resolve_augmentations(names)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        if not batchable(self.names):
            raise ValueError(
                f"augmentations {list(self.names)} have no batch form (only "
                f"{list(BATCH_AUGMENTATIONS)} do): use mia_bench.augment.train_augmentation"
            )
        if "cutout" in self.names and min(self.image_size) < CUTOUT_SIZE:
            raise ValueError(
                f"cutout needs images of at least {CUTOUT_SIZE}x{CUTOUT_SIZE}, got "
                f"{self.image_size}: drop cutout or use larger images"
            )
        if "crop" in self.names and min(self.image_size) <= CROP_PADDING:
            raise ValueError(
                f"crop pads {CROP_PADDING} pixels by reflection, which needs images larger "
                f"than that, got {self.image_size}"
            )

    def __repr__(self) -> str:
        return f"BatchAugmentation({list(self.names)}, image_size={self.image_size})"

    def draw(self, batch: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The random parameters of ``batch`` images, in application order.

        Returns:
            A subset of ``top``, ``left`` (crop corner in the padded image, ``int64[B]``
            in ``0..8``), ``flip`` (``bool[B]``), ``hole_top``, ``hole_left`` (``int64[B]``,
            the hole's corner in the output image).
        """
        (h, w), span = self.image_size, 2 * CROP_PADDING + 1
        params: dict[str, torch.Tensor] = {}
        if "crop" in self.names:
            params["top"] = torch.randint(span, (batch,), generator=generator)
            params["left"] = torch.randint(span, (batch,), generator=generator)
        if "mirror" in self.names:
            params["flip"] = torch.rand(batch, generator=generator) < 0.5
        if "cutout" in self.names:
            params["hole_top"] = torch.randint(h - CUTOUT_SIZE + 1, (batch,), generator=generator)
            params["hole_left"] = torch.randint(w - CUTOUT_SIZE + 1, (batch,), generator=generator)
        return params

    def apply(self, images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Augment ``images`` (``uint8[B, H, W, C]``) with the parameters of :meth:`draw`.

        Returns:
            ``uint8[B, H, W, C]``, a new tensor (``images`` is left as it is).
        """
        params = {k: v.to(images.device) for k, v in params.items()}
        b, h, w = images.shape[:3]
        rows = torch.arange(h, device=images.device).expand(b, h)  # [B, H]
        cols = torch.arange(w, device=images.device).expand(b, w)  # [B, W]
        if "top" in params:
            rows = reflect_101(rows + (params["top"] - CROP_PADDING)[:, None], h)
            cols = reflect_101(cols + (params["left"] - CROP_PADDING)[:, None], w)
        if "flip" in params:
            cols = torch.where(params["flip"][:, None], cols.flip(1), cols)
        batch = torch.arange(b, device=images.device)[:, None, None]  # [B, 1, 1]
        out = images[batch, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
        if "hole_top" in params:
            out.masked_fill_(self._hole(params, b, h, w)[..., None], 0)
        return out

    @staticmethod
    def _hole(params: dict[str, torch.Tensor], b: int, h: int, w: int) -> torch.Tensor:
        device = params["hole_top"].device
        r = torch.arange(h, device=device) - params["hole_top"][:, None]  # [B, H]
        c = torch.arange(w, device=device) - params["hole_left"][:, None]  # [B, W]
        in_rows, in_cols = (r >= 0) & (r < CUTOUT_SIZE), (c >= 0) & (c < CUTOUT_SIZE)
        return in_rows[:, :, None] & in_cols[:, None, :]  # [B, H, W]

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Draw the parameters of ``images`` (``uint8[B, H, W, C]``) and apply them."""
        if not self.names:
            return images
        return self.apply(images, self.draw(len(images), generator))
