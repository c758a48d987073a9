"""Train-time augmentations, their wiring into image data modules, query views, recipes."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from mia_bench.augment import (
    MAX_QUERY_SHIFT,
    QUERY_VIEW_PRESETS,
    QUERY_VIEWS,
    TRAIN_AUGMENTATIONS,
    lira_views,
    query_views,
    resolve_views,
    shift_images,
    train_augmentation,
)
from mia_bench.callbacks.signal_recorder import compute_signals
from mia_bench.data import CIFAR10, CIFAR100, CIFAR10Partial
from mia_bench.data.cifar import ImageMembershipDataModule
from mia_bench.data.membership import Pool
from mia_bench.lightning_cli import parse_fit_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "lightning_configs"
PARTIAL_ROOT = REPO.parent / "shared" / "data" / "cifar10_partial"
RECIPES = {
    "none": [],
    "crop": ["crop"],
    "mirror": ["mirror"],
    "cutout": ["cutout"],
    "autoaugment": ["autoaugment"],
    "all": ["crop", "mirror", "cutout", "autoaugment"],
}


def random_images(n: int, seed: int = 0) -> np.ndarray:
    """``uint8[n, 32, 32, 3]`` noise."""
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def draws(names: list[str], image: np.ndarray, n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` augmentations of one image by a fresh pipeline, after ``torch.manual_seed``."""
    torch.manual_seed(seed)
    augment = train_augmentation(names)
    return [augment(image) for _ in range(n)]


def bright_pixel(row: int = 16, col: int = 16) -> np.ndarray:
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    image[row, col] = 255
    return image


# --- train-time augmentations ------------------------------------------------------------


@pytest.mark.parametrize("names", [[n] for n in TRAIN_AUGMENTATIONS] + [["all"]])
def test_each_augmentation_keeps_shape_and_dtype_and_changes_images(names: list[str]) -> None:
    image = random_images(1)[0]
    outs = draws(names, image, 20)
    assert all(o.shape == image.shape and o.dtype == np.uint8 for o in outs)
    assert any(not np.array_equal(o, image) for o in outs)


def test_crop_shifts_content_by_at_most_the_padding() -> None:
    offsets = set()
    for out in draws(["crop"], bright_pixel(), 60):
        rows, cols = np.nonzero(out[..., 0])
        assert len(rows) == 1, "one bright pixel in, one out (no reflection reaches it)"
        offsets.add((int(rows[0]) - 16, int(cols[0]) - 16))
    assert all(max(abs(dy), abs(dx)) <= 4 for dy, dx in offsets)
    assert len(offsets) > 5


def test_crop_pads_by_reflection_without_repeating_the_edge() -> None:
    # reflect-101 (TensorFlow's REFLECT, LiRA's padding): column -k mirrors column k
    edge = draws(["crop"], bright_pixel(row=16, col=0), 60)
    assert all(np.count_nonzero(o[..., 0]) <= 1 for o in edge)  # edge never duplicated
    outs = draws(["crop"], bright_pixel(row=16, col=1), 60)
    twins = [o for o in outs if np.count_nonzero(o[..., 0]) == 2]
    assert twins, "some crops reach past the left edge and show the reflection"
    for o in twins:
        _, cols = np.nonzero(o[..., 0])
        assert cols[1] - cols[0] == 2  # column 1 and its reflection at column -1


def test_mirror_flips_half_the_time() -> None:
    image = random_images(1)[0]
    outs = draws(["mirror"], image, 40)
    flipped = [np.array_equal(o, image[:, ::-1]) for o in outs]
    assert all(f or np.array_equal(o, image) for f, o in zip(flipped, outs, strict=True))
    assert 5 < sum(flipped) < 35


def zero_boxes(image: np.ndarray) -> list[tuple[int, int]]:
    """Top-left corners of the 16x16 windows where every channel is 0."""
    zero = (image == 0).all(-1).astype(np.int64)  # [H, W]
    windows = np.lib.stride_tricks.sliding_window_view(zero, (16, 16))  # [17, 17, 16, 16]
    return [tuple(int(v) for v in t) for t in np.argwhere(windows.sum((-2, -1)) == 256)]


def test_cutout_zeroes_one_16x16_square() -> None:
    image = np.full((32, 32, 3), 200, dtype=np.uint8)
    corners = set()
    for out in draws(["cutout"], image, 20):
        assert np.count_nonzero((out == 0).all(-1)) == 256
        (corner,) = zero_boxes(out)
        corners.add(corner)
        assert (out[(out != 0).all(-1)] == 200).all()
    assert len(corners) > 1


def test_combinations_compose_in_the_documented_order() -> None:
    assert train_augmentation(["cutout", "mirror", "crop"]).names == ("crop", "mirror", "cutout")
    assert train_augmentation(["all"]).names == TRAIN_AUGMENTATIONS
    assert train_augmentation(RECIPES["all"]).names == TRAIN_AUGMENTATIONS
    assert train_augmentation([]) is None
    # crop moves the bright pixel, and cutout after it still leaves a whole 16x16 hole
    image = np.full((32, 32, 3), 200, dtype=np.uint8)
    image[16, 16] = 255
    moved = 0
    for out in draws(["crop", "cutout"], image, 30):
        assert len(zero_boxes(out)) == 1  # the hole is applied last, never cropped away
        moved += not (out[16, 16] == 255).all() and (out == 255).all(-1).any()
    assert moved > 0
    # cutout after autoaugment: the hole keeps the fill value whatever the policy did
    for out in draws(["autoaugment", "cutout"], random_images(1)[0], 30):
        assert zero_boxes(out)


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown augmentations \\['flip'\\].*crop.*all"):
        train_augmentation(["crop", "flip"])


def test_same_torch_seed_same_augmentations_and_pickle_roundtrip() -> None:
    image = random_images(1)[0]
    a, b = draws(["all"], image, 10, seed=3), draws(["all"], image, 10, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    augment = pickle.loads(pickle.dumps(train_augmentation(["all"])))
    assert augment(image).shape == image.shape


# --- the data module ----------------------------------------------------------------------


class TinyImages(ImageMembershipDataModule):
    num_classes = 2

    def __init__(self, images: np.ndarray, **kwargs) -> None:
        super().__init__(**kwargs)
        self.images = images

    def load_pool(self) -> Pool:
        return Pool(inputs=self.images, labels=np.arange(len(self.images)) % 2)


def by_index(loader: torch.utils.data.DataLoader) -> torch.Tensor:
    """Inputs of one pass over ``loader``, sorted by pool index."""
    xs, indices = zip(*((x, i) for x, _, i in loader), strict=True)
    return torch.cat(xs)[torch.cat(indices).argsort()]


def test_augmentation_applies_to_the_train_loader_only() -> None:
    torch.manual_seed(0)
    images = random_images(12)
    dm = TinyImages(images, augment=["crop", "mirror"], batch_size=4, eval_batch_size=5)
    dm.setup("fit")
    train = dm.train_dataloader()
    first = by_index(train)
    train.sampler.set_epoch(1)  # as Lightning does each epoch: new draws
    assert not torch.equal(first, by_index(train))
    audit, test = by_index(dm.audit_dataloader()), by_index(dm.test_dataloader())
    torch.testing.assert_close(audit, by_index(dm.audit_dataloader()), rtol=0, atol=0)
    plain = torch.stack([dm.eval_transform()(im) for im in images])  # [N, C, H, W]
    torch.testing.assert_close(audit, plain, rtol=0, atol=0)
    torch.testing.assert_close(test, plain[~dm.keep], rtol=0, atol=0)


def test_workers_draw_different_augmentations() -> None:
    torch.manual_seed(0)
    images = np.repeat(random_images(1), 8, axis=0)  # one image, 8 times
    dm = TinyImages(images, augment=["crop"], batch_size=2, num_workers=2)
    dm.setup("fit")
    # the per-image path (autoaugment's); tensor batches have no workers
    first, second = [x for x, _, _ in dm.example_dataloader("train")]  # worker 0, worker 1
    assert not torch.equal(first, second)


@pytest.mark.parametrize("cls", [CIFAR10, CIFAR100, CIFAR10Partial])
def test_cifar_modules_accept_augment(cls: type) -> None:
    dm = cls(root="nowhere", augment=["mirror", "crop"], run_index=1)
    assert dm.augment == ["crop", "mirror"] and dm.run_index == 1
    assert dm.train_augmentation().names == ("crop", "mirror")
    assert cls(root="nowhere").train_augmentation() is None
    with pytest.raises(ValueError, match="valid names"):
        cls(augment=["crpo"])


def test_real_cifar10_partial_batch_with_all_augmentations() -> None:
    if not (PARTIAL_ROOT / "cifar10_partial.npz").is_file():
        pytest.skip(f"offline copy {PARTIAL_ROOT}/cifar10_partial.npz absent")
    dm = CIFAR10Partial(root=str(PARTIAL_ROOT), augment=["all"], batch_size=64)
    dm.setup("fit")
    x, y, index = next(iter(dm.train_dataloader()))
    assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32
    plain = torch.stack([dm.eval_transform()(dm.pool.inputs[int(n)]) for n in index])
    assert not torch.equal(x, plain)


# --- query views ----------------------------------------------------------------------------


def one_hot_batch(row: int = 10, col: int = 12) -> torch.Tensor:
    x = torch.zeros(2, 3, 32, 32)
    x[:, :, row, col] = 1.0
    return x


def test_zero_shift_is_plain_and_mirrored_zero_shift_is_mirror() -> None:
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(QUERY_VIEWS["shift_0_0"](x), x)
    assert torch.equal(QUERY_VIEWS["mirror_shift_0_0"](x), x.flip(-1))


def test_a_shift_moves_a_one_hot_pixel_by_dx_dy() -> None:
    x = one_hot_batch()
    span = range(-MAX_QUERY_SHIFT, MAX_QUERY_SHIFT + 1)
    for dx in span:
        for dy in span:
            out = QUERY_VIEWS[f"shift_{dx}_{dy}"](x)
            assert out.shape == x.shape
            assert torch.nonzero(out[0, 0]).tolist() == [[10 + dy, 12 + dx]]


def test_shift_fills_the_border_by_reflection() -> None:
    x = torch.randn(1, 3, 32, 32)
    out = shift_images(x, 2, -1)  # right by 2, up by 1
    torch.testing.assert_close(out[..., :31, 2:], x[..., 1:, :30])
    torch.testing.assert_close(out[..., :31, 0], x[..., 1:, 2])  # column -2 mirrors column 2
    torch.testing.assert_close(out[..., 31, 2:], x[..., 30, :30])  # row 32 mirrors row 30


def test_mirror_shift_is_the_shift_of_the_mirror() -> None:
    x = torch.randn(2, 3, 32, 32)
    for dx, dy in [(1, 0), (-3, 2), (4, -4)]:
        out = QUERY_VIEWS[f"mirror_shift_{dx}_{dy}"](x)
        torch.testing.assert_close(out, shift_images(x.flip(-1), dx, dy))
        torch.testing.assert_close(out, shift_images(x, -dx, dy).flip(-1))
    # the one-hot pixel at column 12 mirrors to 19, then moves by (dx, dy)
    out = QUERY_VIEWS["mirror_shift_2_1"](one_hot_batch())
    assert torch.nonzero(out[0, 0]).tolist() == [[11, 21]]


def test_lira_views_and_presets() -> None:
    assert {k: len(v) for k, v in QUERY_VIEW_PRESETS.items()} == {
        "plain": 1,
        "plain,mirror": 2,
        "lira2": 2,
        "lira18": 18,
        "lira50": 50,
        "lira98": 98,
        "lira162": 162,
    }
    views = lira_views(1)
    assert views[:2] == ("plain", "mirror") and len(set(views)) == 18
    assert set(views) >= {f"shift_{dx}_{dy}" for dx in (-1, 1) for dy in (-1, 0, 1)}
    assert lira_views(2, stride=2, mirror=False) == (
        "plain",
        "shift_-2_-2",
        "shift_0_-2",
        "shift_2_-2",
        "shift_-2_0",
        "shift_2_0",
        "shift_-2_2",
        "shift_0_2",
        "shift_2_2",
    )
    assert resolve_views("plain,mirror") == ("plain", "mirror")
    assert len(query_views("lira162")) == 162
    with pytest.raises(ValueError):
        lira_views(MAX_QUERY_SHIFT + 1)


def test_query_views_insist_on_plain_first_and_known_names() -> None:
    with pytest.raises(ValueError, match="view 0 must be 'plain'"):
        query_views(["mirror", "plain"])
    with pytest.raises(ValueError, match="registered up to 4 pixels"):
        query_views(["plain", "shift_5_0"])
    with pytest.raises(ValueError, match="lira18"):
        query_views(["plain", "lira_18"])


def test_signals_are_recorded_under_every_lira_view() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 4))
    x = torch.randn(6, 3, 32, 32)
    loader = [(x[:4], torch.zeros(4, dtype=torch.long), torch.arange(4))]
    loader.append((x[4:], torch.zeros(2, dtype=torch.long), torch.arange(4, 6)))
    signals = compute_signals(net, loader, "lira18", layers=())
    assert signals.logits.shape == (6, 18, 4)
    with torch.no_grad():
        expected = net(shift_images(x, 1, -1)).numpy()
    k = lira_views(1).index("shift_1_-1")
    np.testing.assert_allclose(signals.logits[:, k], expected, rtol=1e-5, atol=1e-6)


# --- recipe configs -----------------------------------------------------------------------

# parse_fit_config passes args while pytest's own arguments sit in sys.argv
quiet_cli = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")


def test_every_augment_config_is_checked() -> None:
    assert {p.stem for p in (CONFIGS / "augment").glob("*.yaml")} == set(RECIPES)


@quiet_cli
@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_configs_set_augment_and_keep_the_base_data_class(recipe: str) -> None:
    base = CONFIGS / "cifar10_partial_cnn.yaml"
    config, _ = parse_fit_config(
        ["-c", str(base), "-c", str(CONFIGS / "augment" / f"{recipe}.yaml")]
    )
    assert config.data.class_path == "mia_bench.data.CIFAR10Partial"
    assert config.data.init_args.augment == RECIPES[recipe]
    assert config.data.init_args.root == "../shared/data/cifar10_partial"  # base values kept


@quiet_cli
def test_a_later_recipe_replaces_an_earlier_one() -> None:
    files = ["cifar10_resnet18.yaml", "augment/all.yaml", "augment/none.yaml"]
    config, _ = parse_fit_config([a for f in files for a in ("-c", str(CONFIGS / f))])
    assert config.data.class_path == "mia_bench.data.CIFAR10"
    assert config.data.init_args.augment == []
