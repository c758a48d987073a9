"""Image pools: the real partial CIFAR-10 copy, and torchvision's loader on fake batches."""

from __future__ import annotations

import hashlib
import pickle
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd

from mia_bench.data import CIFAR10, CIFAR100, CIFAR10Partial
from mia_bench.data.cifar import ImageMembershipDataModule

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
NUM_TRAIN, NUM_TEST = 10, 3

# our class -> (torchvision class, train files, test file, meta file, label key, meta key)
LAYOUTS = {
    CIFAR10: (
        tvd.CIFAR10,
        [f"data_batch_{b}" for b in range(1, 6)],
        "test_batch",
        "batches.meta",
        "labels",
        "label_names",
    ),
    CIFAR100: (tvd.CIFAR100, ["train"], "test", "meta", "fine_labels", "fine_label_names"),
}


def write_pickle(path: Path, content: dict) -> str:
    """Pickle ``content`` to ``path`` (str keys, as torchvision reads); return its md5."""
    path.write_bytes(pickle.dumps(content))
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_batches(
    folder: Path, files: list[str], images: np.ndarray, labels: np.ndarray, label_key: str
) -> list[list[str]]:
    """Batches in the official python format; returns torchvision's ``[[name, md5]]``."""
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # [n, 3072], CHW order
    parts = np.array_split(np.arange(len(images)), len(files))
    content = [{"data": rows[i], label_key: labels[i].tolist()} for i in parts]
    return [[f, write_pickle(folder / f, c)] for f, c in zip(files, content, strict=True)]


def fake_cifar(root: Path, cls: type) -> tuple[type, np.ndarray, np.ndarray]:
    """A tiny ``cifar-*`` folder, and a torchvision subclass that expects its md5s."""
    base, train_files, test_file, meta_file, label_key, meta_key = LAYOUTS[cls]
    folder = root / base.base_folder
    folder.mkdir(parents=True)
    images = np.random.default_rng(0).integers(0, 256, (NUM_TRAIN + NUM_TEST, 32, 32, 3))
    images = images.astype(np.uint8)  # [13, 32, 32, 3]
    labels = np.arange(len(images)) % cls.num_classes
    train, test = slice(0, NUM_TRAIN), slice(NUM_TRAIN, None)
    fake = type(
        "FakeMd5" + base.__name__,
        (base,),
        {
            "train_list": write_batches(
                folder, train_files, images[train], labels[train], label_key
            ),
            "test_list": write_batches(folder, [test_file], images[test], labels[test], label_key),
            "meta": {
                "filename": meta_file,
                "key": meta_key,
                "md5": write_pickle(folder / meta_file, {meta_key: ["c"] * cls.num_classes}),
            },
        },
    )
    return fake, images, labels


@pytest.mark.parametrize("cls", [CIFAR10, CIFAR100])
def test_pool_is_train_then_test_from_torchvision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cls: type
) -> None:
    fake, images, labels = fake_cifar(tmp_path, cls)
    monkeypatch.setattr(cls, "torchvision_class", fake)
    pool = cls(root=str(tmp_path)).pool
    np.testing.assert_array_equal(pool.inputs, images)
    np.testing.assert_array_equal(pool.labels, labels)
    assert pool.inputs.dtype == np.uint8 and pool.labels.dtype == np.int64


def test_local_archive_is_extracted_without_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, images, _ = fake_cifar(tmp_path / "src", CIFAR10)
    archive = tmp_path / "root" / fake.filename
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tmp_path / "src" / fake.base_folder, arcname=fake.base_folder)
    fake.tgz_md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setattr(CIFAR10, "torchvision_class", fake)
    pool = CIFAR10(root=str(archive.parent)).pool
    np.testing.assert_array_equal(pool.inputs, images)


def test_corrupted_folder_error_names_folder_and_url(tmp_path: Path) -> None:
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(RuntimeError) as err:
        _ = CIFAR10(root=str(tmp_path)).pool
    assert str(tmp_path / "cifar-10-batches-py") in str(err.value)
    assert tvd.CIFAR10.url in str(err.value)


def test_cifar10_partial_real_file() -> None:
    root = SHARED_DATA / "cifar10_partial"
    if not (root / "cifar10_partial.npz").is_file():
        pytest.skip(f"offline copy {root}/cifar10_partial.npz absent (../shared/data)")
    dm = CIFAR10Partial(root=str(root))
    pool = dm.pool
    assert pool.inputs.shape == (6102, 32, 32, 3) and pool.inputs.dtype == np.uint8
    assert pool.labels.shape == (6102,) and set(np.unique(pool.labels)) == set(range(10))
    x = dm.eval_transform()(pool.inputs[0])
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert -3.0 < x.min() and x.max() < 3.0  # normalized, not 0..255


def test_train_transform_applies_the_augmentation_before_normalizing() -> None:
    class Flipped(ImageMembershipDataModule):
        def train_augmentation(self) -> Callable[[np.ndarray], np.ndarray]:
            return lambda image: image[:, ::-1]

    image = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 3)
    dm = Flipped()
    flipped = dm.train_transform()(image)
    torch.testing.assert_close(flipped, dm.eval_transform()(image).flip(-1))
    assert ImageMembershipDataModule().train_transform()(image).shape == (3, 2, 2)
