"""CIFAR-10, CIFAR-100 and the project's partial CIFAR-10 copy, as membership pools.

Images stay uint8 HWC numpy arrays in the pool (60k CIFAR images take 184 MB); the
per-example transform turns one into a normalized float32 CHW tensor, and its batch twin
(:class:`ImageBatchToTensor`) does the same to a whole batch of the pool held as a tensor.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.datasets as tvd
from torchvision.datasets.utils import extract_archive
from torchvision.transforms import Compose

from mia_bench.augment import resolve_augmentations, train_augmentation
from mia_bench.batch_augment import BatchAugmentation, batchable
from mia_bench.data.download import check_md5, missing_file_error
from mia_bench.data.membership import MembershipDataModule, Pool

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


class ImageToTensor:
    """uint8 ``[H, W, C]`` image -> float32 ``[C, H, W]`` tensor, normalized per channel.

    A class rather than a closure so that DataLoader workers can pickle it.

    >>> t = ImageToTensor(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    >>> x = t(np.full((2, 2, 3), 255, dtype=np.uint8))
    >>> tuple(x.shape), x.dtype, x.max().item()
    ((3, 2, 2), torch.float32, 1.0)
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)  # [C, 1, 1]
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)  # [C, 1, 1]

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)  # [C, H, W]
        return (x.float() / 255.0 - self.mean) / self.std


class ImageBatchToTensor:
    """uint8 ``[B, H, W, C]`` pool rows -> float32 ``[B, C, H, W]``, augmented then normalized.

    The batch twin of ``Compose([TrainAugmentation, ImageToTensor])``: the same
    normalization to the last bit, after :class:`~mia_bench.batch_augment.BatchAugmentation`
    (if any) drawn from the loader's generator.

    Args:
        mean, std: per channel, of pixel values in [0, 1].
        augmentation: applied to the uint8 batch first; None: none.

    >>> t = ImageBatchToTensor(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    >>> x = t(torch.full((4, 2, 2, 3), 255, dtype=torch.uint8), torch.Generator())
    >>> tuple(x.shape), x.dtype, x.max().item()
    ((4, 3, 2, 2), torch.float32, 1.0)
    """

    def __init__(
        self,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        augmentation: BatchAugmentation | None = None,
    ) -> None:
        self.per_image = ImageToTensor(mean, std)
        self.augmentation = augmentation

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.augmentation is not None:
            images = self.augmentation(images, generator)  # [B, H, W, C] uint8
        x = images.permute(0, 3, 1, 2).contiguous()  # [B, C, H, W] uint8
        mean = self.per_image.mean.to(x.device)  # [C, 1, 1]
        std = self.per_image.std.to(x.device)  # [C, 1, 1]
        return (x.float() / 255.0 - mean) / std


class ImageMembershipDataModule(MembershipDataModule):
    """Base of image pools: ``Pool.inputs`` is ``uint8[N, H, W, C]``.

    Subclasses set ``mean`` and ``std`` (per channel, of pixel values in [0, 1]).
    Query views are the plain image and its horizontal mirror.

    Args:
        augment: train-time augmentations by name, applied to the training loader only
            (test and audit loaders never are): any of ``autoaugment``, ``crop``,
            ``mirror``, ``cutout``, or ``all``; order does not matter (see
            :mod:`mia_bench.augment`). ``None`` or ``[]``: no augmentation.
        **kwargs: the arguments of :class:`MembershipDataModule` (root, run_index,
            num_runs, pkeep, split_seed, batch_size, eval_batch_size, num_workers,
            download).
    """

    input_shape = (3, 32, 32)
    query_views = ("plain", "mirror")
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)

    def __init__(self, *, augment: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.augment = list(resolve_augmentations(augment or []))  # fails early on a typo

    def eval_transform(self) -> Callable[[Any], Any]:
        return ImageToTensor(self.mean, self.std)

    def train_augmentation(self) -> Callable[[np.ndarray], np.ndarray] | None:
        """Train-time augmentation of a uint8 HWC image, applied before normalizing.

        The single place where augmentation enters training: the ``augment`` names
        made into one callable by :func:`mia_bench.augment.train_augmentation`.
        """
        return train_augmentation(self.augment, image_size=self.input_shape[1:])

    def train_transform(self) -> Callable[[Any], Any]:
        augmentation = self.train_augmentation()
        if augmentation is None:
            return self.eval_transform()
        return Compose([augmentation, self.eval_transform()])

    def batch_transform(self, train: bool) -> ImageBatchToTensor | None:
        """The batch twin of :meth:`train_transform` / :meth:`eval_transform`.

        None (per-image DataLoader) when an augmentation has no batch form
        (``autoaugment``).
        """
        names = self.augment if train else []
        if not batchable(names):
            return None
        augmentation = BatchAugmentation(names, self.input_shape[1:]) if names else None
        return ImageBatchToTensor(self.mean, self.std, augmentation)


class _TorchvisionCIFAR(ImageMembershipDataModule):
    """CIFAR read with torchvision: the pool is the train set followed by the test set.

    Pool index ``n < 50000`` is train index ``n``; otherwise test index ``n - 50000``.
    ``root`` holds the extracted folder (or the official archive, extracted on first
    use); ``download=True`` lets torchvision fetch the archive.
    """

    torchvision_class: type[tvd.CIFAR10] = tvd.CIFAR10

    @property
    def folder(self) -> Path:
        """The extracted folder torchvision reads, e.g. ``<root>/cifar-10-batches-py``."""
        return Path(self.root) / self.torchvision_class.base_folder

    @property
    def archive(self) -> Path:
        """The official archive, e.g. ``<root>/cifar-10-python.tar.gz``."""
        return Path(self.root) / self.torchvision_class.filename

    def load_pool(self) -> Pool:
        self._ensure_extracted()
        train, test = self._open(train=True), self._open(train=False)
        inputs = np.concatenate([train.data, test.data])  # [60000, 32, 32, 3] uint8
        labels = np.concatenate([train.targets, test.targets]).astype(np.int64)  # [60000]
        return Pool(inputs=inputs, labels=labels)

    def _ensure_extracted(self) -> None:
        """Extract a local archive if needed; raise a clear error if nothing is there."""
        if self.folder.is_dir() or self.download:
            return
        if self.archive.is_file():
            check_md5(self.archive, self.torchvision_class.tgz_md5)
            extract_archive(str(self.archive), str(self.root))
            return
        raise missing_file_error(
            self.folder,
            self.torchvision_class.url,
            hint=f"Looked for the extracted folder {self.folder} and the archive {self.archive}.",
        )

    def _open(self, train: bool) -> tvd.CIFAR10:
        try:
            return self.torchvision_class(str(self.root), train=train, download=self.download)
        except RuntimeError as err:
            raise RuntimeError(
                f"{self.folder}: {err}. Its files are incomplete or fail torchvision's md5 "
                f"check: delete the folder and put the official {self.archive.name} "
                f"({self.torchvision_class.url}) in {self.root}, or pass --data.download true."
            ) from err


CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


class CIFAR10(_TorchvisionCIFAR):
    """CIFAR-10 (Krizhevsky 2009): 60,000 32x32 colour images, 10 classes."""

    num_classes = 10
    class_names = CIFAR10_CLASSES
    mean = CIFAR10_MEAN
    std = CIFAR10_STD
    torchvision_class = tvd.CIFAR10
    pool_size = 60_000


class CIFAR100(_TorchvisionCIFAR):
    """CIFAR-100 (Krizhevsky 2009): 60,000 32x32 colour images, 100 fine classes."""

    num_classes = 100
    pool_size = 60_000
    mean = CIFAR100_MEAN
    std = CIFAR100_STD
    torchvision_class = tvd.CIFAR100


class CIFAR10Partial(ImageMembershipDataModule):
    """The 6,102 CIFAR-10 images recovered byte-exactly in the project's offline copy.

    ``root`` holds ``cifar10_partial.npz`` (see ``shared/data/README.md``): 5,085
    training images then 1,017 test images form the pool. For small tests and demos,
    not a replacement for CIFAR-10. There is no download for this file.
    """

    num_classes = 10
    class_names = CIFAR10_CLASSES
    mean = CIFAR10_MEAN
    std = CIFAR10_STD
    filename = "cifar10_partial.npz"
    md5 = "d8abb09af29286e22b8a15e761446b07"
    pool_size = 6102

    def load_pool(self) -> Pool:
        path = Path(self.root) / self.filename
        if not path.is_file():
            raise missing_file_error(
                path,
                None,
                hint="It is the project's offline copy, kept in ../shared/data/cifar10_partial "
                "next to the repository: pass --data.root ../shared/data/cifar10_partial.",
            )
        check_md5(path, self.md5)
        with np.load(path) as z:
            inputs = np.concatenate([z["x_train"], z["x_test"]])  # [6102, 32, 32, 3] uint8
            labels = np.concatenate([z["y_train"], z["y_test"]]).astype(np.int64)  # [6102]
        return Pool(inputs=inputs, labels=labels)
