"""CelebA and Snacks on tiny generated files of their real formats; the pool cache."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd
from PIL import Image

from mia_bench.data import CelebA, Snacks
from mia_bench.data.celeba import CELEBA_ATTRIBUTES, CELEBA_URL, subset_indices
from mia_bench.data.snacks import SNACKS_CLASSES, SNACKS_HUB, SNACKS_URL

NUM_FACES, SIZE = 12, 16
SMILING, MALE = CELEBA_ATTRIBUTES.index("Smiling"), CELEBA_ATTRIBUTES.index("Male")
ATTRIBUTES = np.random.default_rng(0).random((NUM_FACES, 40)) < 0.5  # [N, 40]


def write_celeba(root: Path) -> Path:
    """``<root>/celeba``: random 178x218 JPEGs, and the two lists (of ``ATTRIBUTES``)."""
    rng = np.random.default_rng(1)
    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    rows = [f"{n + 1:06d}.jpg" for n in range(NUM_FACES)]
    for name in rows:
        pixels = rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "img_align_celeba" / name)
    lines = [str(NUM_FACES), " ".join(CELEBA_ATTRIBUTES)]
    for name, values in zip(rows, ATTRIBUTES, strict=True):
        lines.append(name + " " + " ".join(" 1" if v else "-1" for v in values))
    (folder / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    partition = [f"{name} {n % 3}" for n, name in enumerate(rows)]
    (folder / "list_eval_partition.txt").write_text("\n".join(partition) + "\n")
    return root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A tiny CelebA under ``tmp_path``."""
    return write_celeba(tmp_path)


def forbid_image_open(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("an image file was opened although the pool is cached")

    monkeypatch.setattr(Image, "open", fail)


def check_batches(dm: Any, size: int) -> None:
    dm.setup("fit")
    x, y, index = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.float32 and x.shape == (len(index), 3, size, size)
    np.testing.assert_array_equal(y.numpy(), dm.pool.labels[index.numpy()])
    seen = torch.cat([i for _, _, i in dm.audit_dataloader()]).numpy()
    np.testing.assert_array_equal(seen, np.arange(dm.num_examples))


# --- CelebA ---------------------------------------------------------------------------


def test_celeba_pool_labels_and_shape(root: Path) -> None:
    dm = CelebA(root=str(root), image_size=SIZE, batch_size=4)
    assert dm.pool.inputs.shape == (NUM_FACES, SIZE, SIZE, 3)
    assert dm.pool.inputs.dtype == np.uint8 and dm.pool.labels.dtype == np.int64
    np.testing.assert_array_equal(dm.pool.labels, ATTRIBUTES[:, SMILING])
    assert dm.input_shape == (3, SIZE, SIZE) and CelebA.input_shape == (3, 32, 32)
    with Image.open(root / "celeba" / "img_align_celeba" / "000002.jpg") as image:
        square = image.crop((0, 20, 178, 198)).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(dm.pool.inputs[1], np.asarray(square))  # 178x178 center
    check_batches(dm, SIZE)


def test_celeba_target_attribute_and_properties(root: Path) -> None:
    dm = CelebA(root=str(root), image_size=SIZE, target_attribute="Male")
    np.testing.assert_array_equal(dm.pool.labels, ATTRIBUTES[:, MALE])
    properties = dm.properties()
    assert list(properties) == list(CELEBA_ATTRIBUTES)
    for i, name in enumerate(CELEBA_ATTRIBUTES):
        assert properties[name].dtype == np.int64
        np.testing.assert_array_equal(properties[name], ATTRIBUTES[:, i])
    with pytest.raises(ValueError, match="Wearing_Necktie") as err:
        CelebA(target_attribute="smiling")
    assert "'smiling'" in str(err.value)


def test_celeba_subset_is_seeded_and_independent_of_the_run(
    root: Path,
) -> None:
    full = CelebA(root=str(root), image_size=SIZE).pool
    runs = [
        CelebA(root=str(root), image_size=SIZE, max_examples=5, run_index=r, split_seed=r)
        for r in (0, 1)
    ]
    chosen = subset_indices(NUM_FACES, 5, seed=0)
    for dm in runs:
        np.testing.assert_array_equal(dm.pool.inputs, full.inputs[chosen])
        np.testing.assert_array_equal(dm.properties()["Male"], ATTRIBUTES[chosen, MALE])
    other = CelebA(root=str(root), image_size=SIZE, max_examples=5, subset_seed=1).pool
    assert not np.array_equal(other.inputs, runs[0].pool.inputs)


def test_celeba_cache_is_reused_and_keyed(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = CelebA(root=str(root), image_size=SIZE).pool
    folder = root / "celeba"
    assert (folder / f"mia_bench_pool_{SIZE}px_all.npz").is_file()
    forbid_image_open(monkeypatch)
    again = CelebA(root=str(root), image_size=SIZE, target_attribute="Male")
    np.testing.assert_array_equal(again.pool.inputs, first.inputs)
    assert len(again.properties()) == 40
    with pytest.raises(AssertionError, match="opened"):  # another size is another cache
        _ = CelebA(root=str(root), image_size=SIZE + 1).pool
    assert not list(folder.glob("*.part"))


def test_cache_write_is_atomic(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:

    def half_written(f: Any, **arrays: Any) -> None:
        f.write(b"PK\x03\x04 half")
        raise OSError("No space left on device")

    monkeypatch.setattr(np, "savez", half_written)
    assert len(CelebA(root=str(root), image_size=SIZE).pool.labels) == NUM_FACES
    assert {p.suffix for p in (root / "celeba").iterdir()} == {"", ".txt"}  # nothing left


def test_unreadable_cache_is_rebuilt_and_read_only_folder_not_cached(
    root: Path,
) -> None:
    folder = root / "celeba"
    (folder / f"mia_bench_pool_{SIZE}px_all.npz").write_bytes(b"not a zip")
    np.testing.assert_array_equal(
        CelebA(root=str(root), image_size=SIZE).pool.labels, ATTRIBUTES[:, SMILING]
    )
    folder.chmod(0o555)
    try:
        assert len(CelebA(root=str(root), image_size=SIZE + 1).pool.labels) == NUM_FACES
        assert not list(folder.glob(f"*{SIZE + 1}px*")) and not list(folder.glob("*.part"))
    finally:
        folder.chmod(0o755)


def test_celeba_missing_images_name_the_path(root: Path) -> None:
    missing = root / "celeba" / "img_align_celeba" / "000003.jpg"
    missing.unlink()
    with pytest.raises(FileNotFoundError) as err:
        _ = CelebA(root=str(root)).pool
    assert str(missing) in str(err.value) and CELEBA_URL in str(err.value)


def test_celeba_wrong_attribute_file(root: Path) -> None:
    (root / "celeba" / "list_attr_celeba.txt").write_text("1\nSmiling\n000001.jpg 1\n")
    with pytest.raises(ValueError, match="not CelebA's attribute list"):
        _ = CelebA(root=str(root)).pool


def test_celeba_download_uses_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake(root: str, split: str, download: bool) -> None:
        calls.append((root, split, download))
        if len(calls) > 1:
            raise RuntimeError("Too many users have viewed or downloaded this file recently")
        write_celeba(Path(root))

    monkeypatch.setattr(tvd, "CelebA", fake)
    pool = CelebA(root=str(tmp_path / "a"), image_size=SIZE, download=True).pool
    assert calls == [(str(tmp_path / "a"), "all", True)] and len(pool.labels) == NUM_FACES
    with pytest.raises(RuntimeError, match="Google Drive") as err:  # the second call fails
        _ = CelebA(root=str(tmp_path / "b"), download=True).pool
    assert CELEBA_URL in str(err.value) and "Too many users" in str(err.value)


# --- Snacks ---------------------------------------------------------------------------

SNACK_CLASSES = ("apple", "hot dog", "waffle")  # labels 0, 8, 18
SNACK_SHAPES = ((40, 30), (30, 50))  # (width, height): landscape, portrait


def color(n: int) -> tuple[int, int, int]:
    return (10 * n % 250, 200 - 5 * n, 50)


def write_snacks(root: Path, val: str = "val") -> np.ndarray:
    """An image folder of uniform JPEGs (image ``n`` has ``color(n)``); returns labels."""
    labels, n = [], 0
    for split in ("train", val, "test"):
        for name in SNACK_CLASSES:
            (root / split / name).mkdir(parents=True)
            for k, shape in enumerate(SNACK_SHAPES):
                Image.new("RGB", shape, color(n)).save(root / split / name / f"{k}.jpg")
                labels.append(SNACKS_CLASSES.index(name))
                n += 1
    return np.array(labels)


def check_colors(images: np.ndarray) -> None:
    expected = np.array([color(n) for n in range(len(images))])[:, None, None]  # [N, 1, 1, 3]
    assert np.abs(images.astype(int) - expected).max() <= 3  # JPEG rounding


@pytest.mark.parametrize("val", ["val", "validation"])
def test_snacks_folder_pool_and_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, val: str
) -> None:
    labels = write_snacks(tmp_path, val)
    dm = Snacks(root=str(tmp_path), image_size=SIZE, batch_size=4)
    assert dm.pool.inputs.shape == (len(labels), SIZE, SIZE, 3)
    assert dm.pool.inputs.dtype == np.uint8 and dm.pool.labels.dtype == np.int64
    np.testing.assert_array_equal(dm.pool.labels, labels)
    check_colors(dm.pool.inputs)
    assert dm.input_shape == (3, SIZE, SIZE) and Snacks.input_shape == (3, 64, 64)
    check_batches(dm, SIZE)
    assert (tmp_path / f"mia_bench_snacks_folder_{SIZE}px.npz").is_file()
    forbid_image_open(monkeypatch)
    again = Snacks(root=str(tmp_path), image_size=SIZE).pool
    np.testing.assert_array_equal(again.inputs, dm.pool.inputs)
    np.testing.assert_array_equal(again.labels, labels)


def test_snacks_unknown_class_lists_the_expected(tmp_path: Path) -> None:
    write_snacks(tmp_path)
    (tmp_path / "test" / "pizza").mkdir()
    with pytest.raises(ValueError, match="'pizza'") as err:
        _ = Snacks(root=str(tmp_path)).pool
    assert "watermelon" in str(err.value) and str(tmp_path / "test") in str(err.value)


def test_snacks_missing_split_names_it(tmp_path: Path) -> None:
    write_snacks(tmp_path)
    (tmp_path / "val").rename(tmp_path / "elsewhere")
    with pytest.raises(FileNotFoundError) as err:
        _ = Snacks(root=str(tmp_path)).pool
    assert str(tmp_path / "val") in str(err.value)
    assert SNACKS_URL in str(err.value) and SNACKS_HUB in str(err.value)


class FakeSplit(list):
    """Rows ``{"image": PIL, "label": int}`` with the hub's column access and features."""

    features = {"label": types.SimpleNamespace(names=list(SNACKS_CLASSES))}

    def __getitem__(self, key: Any) -> Any:
        return [row[key] for row in self] if isinstance(key, str) else super().__getitem__(key)


def fake_datasets(calls: list) -> Any:
    """A ``datasets`` module whose hub has 3 + 2 + 2 images, image ``n`` of ``color(n)``."""

    def load_dataset(name: str, cache_dir: str) -> dict[str, FakeSplit]:
        calls.append((name, cache_dir))
        n = iter(range(7))
        return {
            split: FakeSplit(
                {"image": Image.new("RGB", (40, 30), color(next(n))), "label": 19 - k}
                for k in range(count)
            )
            for split, count in (("train", 3), ("validation", 2), ("test", 2))
        }

    return types.SimpleNamespace(load_dataset=load_dataset)


def test_snacks_from_the_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list = []
    monkeypatch.setitem(sys.modules, "datasets", fake_datasets(calls))
    dm = Snacks(root=str(tmp_path), image_size=SIZE, download=True, batch_size=2)
    assert dm.pool.inputs.shape == (7, SIZE, SIZE, 3)
    np.testing.assert_array_equal(dm.pool.labels, [19, 18, 17, 19, 18, 19, 18])
    check_colors(dm.pool.inputs)
    assert calls == [(SNACKS_HUB, str(tmp_path))]
    assert (tmp_path / f"mia_bench_snacks_hub_{SIZE}px.npz").is_file()
    check_batches(dm, SIZE)


def offline(*args: Any, **kwargs: Any) -> None:
    raise ConnectionError("offline")


@pytest.mark.parametrize(
    "module, error, message",
    [
        (None, ImportError, "pip install datasets"),  # None in sys.modules: import fails
        (types.SimpleNamespace(load_dataset=offline), RuntimeError, SNACKS_URL),
    ],
)
def test_snacks_hub_errors_say_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: Any, error: type, message: str
) -> None:
    monkeypatch.setitem(sys.modules, "datasets", module)
    with pytest.raises(error) as err:
        _ = Snacks(root=str(tmp_path), download=True).pool
    assert message in str(err.value) and "image folder" in str(err.value)
