"""Tensor-indexed loaders: the batches of the DataLoader path, an epoch order from (seed, epoch).

The batch augmentations are compared with the per-image albumentations path they replace:
exactly, for the same parameters, and in distribution (chi-square and binomial tests on
fixed seeds, with thresholds far from the values these seeds give).
"""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.fabric.utilities.data import _set_sampler_epoch
from lightning.pytorch.callbacks import ModelCheckpoint
from scipy import stats
from test_augment import TinyImages, random_images  # tests/ is on the path (conftest.py)

from mia_bench.augment import TrainAugmentation, _albumentations_ops
from mia_bench.batch_augment import BatchAugmentation
from mia_bench.data import Digits
from mia_bench.data.batches import TensorBatches, epoch_order
from mia_bench.data.cifar import ImageToTensor

N_DRAWS = 4000  # images per distribution test


def batches(loader) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    return list(iter(loader))


# --- the loader ---------------------------------------------------------------------------


def test_train_order_is_epoch_order_of_the_members_for_each_epoch() -> None:
    torch.manual_seed(11)
    dm = Digits(batch_size=50)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader, TensorBatches) and loader.sampler.seed == 11
    members = torch.from_numpy(dm.members)
    for epoch in (0, 1, 5):
        _set_sampler_epoch(loader, epoch)  # what Lightning's fit loop calls
        seen = torch.cat([index for _, _, index in loader])
        assert torch.equal(seen, epoch_order(members, 11, epoch))
    assert len(loader) == len(batches(loader)) == -(-len(members) // 50)


def test_drop_last_and_bad_batch_size() -> None:
    pool, labels = torch.zeros(10, 2), torch.zeros(10, dtype=torch.long)
    assert [
        len(i) for _, _, i in TensorBatches(pool, labels, torch.arange(10), 4, drop_last=True)
    ] == [4, 4]
    with pytest.raises(ValueError, match="batch size of at least 1"):
        TensorBatches(pool, labels, torch.arange(10), 0)


@pytest.mark.parametrize("split", ["train", "val", "test", "audit"])
def test_tabular_batches_are_those_of_the_dataloader_path(split: str) -> None:
    dm = Digits(batch_size=64, eval_batch_size=100)
    dm.setup("fit")
    old, new = dm.example_dataloader(split), getattr(dm, f"{split}_dataloader")()
    assert isinstance(new, TensorBatches) and len(new) == len(old)
    for (xo, yo, io), (xn, yn, i_n) in zip(batches(old), batches(new), strict=True):
        assert (xn.dtype, yn.dtype, i_n.dtype) == (xo.dtype, yo.dtype, io.dtype)
        assert xn.shape == xo.shape
        if split != "train":  # train orders differ: RandomSampler vs epoch_order
            assert torch.equal(io, i_n) and torch.equal(xo, xn) and torch.equal(yo, yn)
    x, y, index = next(iter(new))
    np.testing.assert_array_equal(x.numpy(), dm.pool.inputs[index.numpy()])
    np.testing.assert_array_equal(y.numpy(), dm.pool.labels[index.numpy()])


@pytest.mark.parametrize("augment", [[], ["crop", "mirror", "cutout"]])
def test_image_eval_batches_equal_the_per_image_path_exactly(augment: list[str]) -> None:
    dm = TinyImages(random_images(40), augment=augment, batch_size=8, eval_batch_size=16)
    dm.setup("fit")
    for split in ("val", "test", "audit"):
        old, new = dm.example_dataloader(split), getattr(dm, f"{split}_dataloader")()
        assert isinstance(new, TensorBatches)
        for a, b in zip(batches(old), batches(new), strict=True):
            for p, q in zip(a, b, strict=True):
                assert p.dtype == q.dtype and torch.equal(p, q)


def test_unaugmented_image_train_batches_are_the_eval_transform_of_their_rows() -> None:
    images = random_images(20)
    dm = TinyImages(images, batch_size=8)
    dm.setup("fit")
    x, _, index = next(iter(dm.train_dataloader()))
    plain = torch.stack([ImageToTensor(dm.mean, dm.std)(images[int(n)]) for n in index])
    torch.testing.assert_close(x, plain, rtol=0, atol=0)


def test_loaders_without_a_batch_form_keep_the_dataloader() -> None:
    dm = TinyImages(random_images(10), augment=["autoaugment", "crop"], batch_size=4)
    dm.setup("fit")
    assert isinstance(dm.train_dataloader(), torch.utils.data.DataLoader)
    assert isinstance(dm.audit_dataloader(), TensorBatches)  # eval has no autoaugment

    class Rows(Digits):
        def eval_transform(self):
            return torch.from_numpy  # a per-example transform with no batch twin

    assert isinstance(Rows().train_dataloader(), torch.utils.data.DataLoader)


def test_pool_and_augmentations_follow_the_device() -> None:
    dm = TinyImages(random_images(12), augment=["crop", "mirror", "cutout"], batch_size=4)
    dm.setup("fit")
    loader = dm.train_dataloader().to("meta")  # any device: batches are made there
    x, y, index = next(iter(loader))
    assert {x.device.type, y.device.type, index.device.type} == {"meta"}
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32


class FakeTrainer:  # what the datamodule reads of a trainer
    def __init__(self, world_size: int, device: str) -> None:
        self.world_size = world_size
        self.strategy = type("Strategy", (), {"root_device": torch.device(device)})()


def test_training_loaders_keep_the_pool_on_the_trainers_device() -> None:
    dm = TinyImages(random_images(12), augment=["crop"], batch_size=4)
    dm.trainer = FakeTrainer(1, "meta")
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        assert next(iter(loader))[0].device.type == "meta"
    assert next(iter(dm.audit_dataloader()))[0].device.type == "cpu"  # consumers move it


def test_several_devices_keep_the_dataloader() -> None:
    dm = Digits()
    dm.trainer = FakeTrainer(2, "cpu")  # Lightning shards DataLoaders, not tensor batches
    assert isinstance(dm.train_dataloader(), torch.utils.data.DataLoader)


@pytest.mark.gpu
def test_cuda_batches_equal_cpu_batches() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    dm = TinyImages(random_images(64), augment=["crop", "mirror", "cutout"], batch_size=16)
    dm.setup("fit")
    cpu = batches(dm.train_dataloader())
    cuda = batches(dm.train_dataloader().to("cuda"))
    for a, b in zip(cpu, cuda, strict=True):
        assert all(torch.equal(p, q.cpu()) for p, q in zip(a, b, strict=True))


# --- resuming -----------------------------------------------------------------------------


class IndexRecorder(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(64, 10)
        self.seen: dict[int, torch.Tensor] = {}

    def training_step(self, batch, batch_idx):
        x, y, index = batch
        seen = self.seen.get(self.current_epoch, torch.empty(0, dtype=torch.long))
        self.seen[self.current_epoch] = torch.cat([seen, index.cpu()])
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(max_epochs: int, tmp_path, ckpt_path: str | None = None) -> IndexRecorder:
    L.seed_everything(3)  # the CLI seeds each run with seed + run_index
    model = IndexRecorder()
    trainer = L.Trainer(
        max_epochs=max_epochs,
        logger=False,
        callbacks=[ModelCheckpoint(dirpath=tmp_path, save_last=True)],
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(model, datamodule=Digits(batch_size=128), ckpt_path=ckpt_path)
    return model


def test_a_resumed_run_draws_the_batches_of_an_uninterrupted_run(tmp_path) -> None:
    whole = fit(3, tmp_path / "whole")
    fit(1, tmp_path / "cut")
    resumed = fit(3, tmp_path / "cut", ckpt_path=str(tmp_path / "cut" / "last.ckpt"))
    assert sorted(resumed.seen) == [1, 2]
    for epoch in (1, 2):
        assert torch.equal(resumed.seen[epoch], whole.seen[epoch])
    assert not torch.equal(whole.seen[0], whole.seen[1])


# --- augmentations against albumentations ------------------------------------------------


def albumentations_draws(names: tuple[str, ...], n: int) -> list[dict]:
    """The parameters albumentations' per-image pipeline applies to ``n`` images."""
    import albumentations as A

    compose = A.Compose(_albumentations_ops(names, 32, 32), save_applied_params=True, seed=1)
    image = random_images(1)[0]
    out = []
    for _ in range(n):
        applied = dict(compose(image=image)["applied_transforms"])
        params: dict[str, int] = {}
        if "RandomCrop" in applied:
            params["left"], params["top"] = applied["RandomCrop"]["crop_coords"][:2]
        params["flip"] = int("HorizontalFlip" in applied)
        if "CoarseDropout" in applied:
            params["hole_left"], params["hole_top"] = applied["CoarseDropout"]["holes"][0][:2]
        out.append(params)
    return out


def batch_draws(names: tuple[str, ...], n: int) -> dict[str, np.ndarray]:
    drawn = BatchAugmentation(names).draw(n, torch.Generator().manual_seed(2))
    return {k: v.long().numpy() for k, v in drawn.items()}


def test_each_albumentations_image_is_replayed_exactly_by_the_batch_ops() -> None:
    names = ("crop", "mirror", "cutout")
    augmentation, images = BatchAugmentation(names), random_images(64, seed=5)
    import albumentations as A

    compose = A.Compose(_albumentations_ops(names, 32, 32), save_applied_params=True, seed=4)
    flips = 0
    for image in images:
        out = compose(image=image)
        applied = dict(out["applied_transforms"])
        (left, top), hole = (
            applied["RandomCrop"]["crop_coords"][:2],
            applied["CoarseDropout"]["holes"][0],
        )
        flips += "HorizontalFlip" in applied
        params = {
            "top": torch.tensor([top]),
            "left": torch.tensor([left]),
            "flip": torch.tensor(["HorizontalFlip" in applied]),
            "hole_top": torch.tensor([hole[1]]),
            "hole_left": torch.tensor([hole[0]]),
        }
        mine = augmentation.apply(torch.from_numpy(image)[None], params)[0]
        assert np.array_equal(mine.numpy(), out["image"])
    assert 0 < flips < len(images)  # both branches were replayed


@pytest.mark.parametrize("top", range(9))
def test_every_crop_offset_equals_albumentations_pad_and_crop(top: int) -> None:
    import albumentations as A
    import cv2

    images = random_images(9, seed=top)
    crop = BatchAugmentation(["crop"])
    for left, image in enumerate(images):
        pad = A.Pad(padding=4, border_mode=cv2.BORDER_REFLECT_101, p=1.0)
        cut = A.Crop(x_min=left, y_min=top, x_max=left + 32, y_max=top + 32, p=1.0)
        expected = A.Compose([pad, cut])(image=image)["image"]
        params = {"top": torch.tensor([top]), "left": torch.tensor([left])}
        assert np.array_equal(
            crop.apply(torch.from_numpy(image)[None], params)[0].numpy(), expected
        )


def chi2_uniform(values: np.ndarray, cells: int) -> float:
    return stats.chisquare(np.bincount(values, minlength=cells)).pvalue


def chi2_same(a: np.ndarray, b: np.ndarray, cells: int) -> float:
    table = np.stack([np.bincount(a, minlength=cells), np.bincount(b, minlength=cells)])
    return stats.chi2_contingency(table).pvalue


@pytest.mark.parametrize("axis", ["top", "left"])
def test_crop_offset_is_uniform_like_albumentations(axis: str) -> None:
    mine = batch_draws(("crop",), N_DRAWS)[axis]
    theirs = np.array([d[axis] for d in albumentations_draws(("crop",), N_DRAWS)])
    assert mine.min() == 0 and mine.max() == 8
    assert chi2_uniform(mine, 9) > 1e-3 and chi2_uniform(theirs, 9) > 1e-3
    assert chi2_same(mine, theirs, 9) > 1e-3


def test_crop_axes_are_independent() -> None:
    drawn = batch_draws(("crop",), N_DRAWS)
    joint = np.zeros((9, 9))
    np.add.at(joint, (drawn["top"], drawn["left"]), 1)
    assert stats.chi2_contingency(joint).pvalue > 1e-3


def test_mirror_rate_is_one_half_like_albumentations() -> None:
    mine = int(batch_draws(("mirror",), N_DRAWS)["flip"].sum())
    theirs = sum(d["flip"] for d in albumentations_draws(("mirror",), N_DRAWS))
    assert stats.binomtest(mine, N_DRAWS, 0.5).pvalue > 1e-3
    assert stats.binomtest(theirs, N_DRAWS, 0.5).pvalue > 1e-3
    table = [[mine, N_DRAWS - mine], [theirs, N_DRAWS - theirs]]
    assert stats.chi2_contingency(table).pvalue > 1e-3


@pytest.mark.parametrize("axis", ["hole_top", "hole_left"])
def test_cutout_position_is_uniform_inside_like_albumentations(axis: str) -> None:
    mine = batch_draws(("cutout",), N_DRAWS)[axis]
    theirs = np.array([d[axis] for d in albumentations_draws(("cutout",), N_DRAWS)])
    assert mine.min() == 0 and mine.max() == 32 - 16  # every corner, hole inside
    assert chi2_uniform(mine, 17) > 1e-3 and chi2_uniform(theirs, 17) > 1e-3
    assert chi2_same(mine, theirs, 17) > 1e-3


def test_batch_cutout_fills_one_16x16_hole_with_zero() -> None:
    images = torch.full((500, 32, 32, 3), 7, dtype=torch.uint8)
    out = BatchAugmentation(["cutout"])(images, torch.Generator().manual_seed(0))
    holes = out[..., 0] == 0  # [B, H, W]
    assert torch.equal(holes.sum((1, 2)), torch.full((500,), 256))
    rows, cols = holes.any(2), holes.any(1)  # [B, H], [B, W]: one run of 16 each
    assert torch.equal(rows.sum(1), torch.full((500,), 16))
    assert torch.equal(cols.sum(1), torch.full((500,), 16))
    assert torch.equal(images, torch.full_like(images, 7))  # input left as it was


def test_the_shift_seen_in_the_output_is_uniform_on_minus_4_to_4() -> None:
    # pixel (i, j) codes its own position, so the output's corner shows the crop's shift
    rows, cols = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    image = np.stack([rows, cols, np.zeros_like(rows)], -1).astype(np.uint8)  # [32, 32, 3]
    batch = torch.from_numpy(image).expand(N_DRAWS, 32, 32, 3)
    out = BatchAugmentation(["crop"])(batch, torch.Generator().manual_seed(9)).numpy()
    shift_y = 16 - out[:, 16, 16, 0].astype(int)  # content moved down by shift_y
    per_image_crop = TrainAugmentation(["crop"])
    per_image = np.array([16 - int(per_image_crop(image)[16, 16, 0]) for _ in range(N_DRAWS)])
    for shifts in (shift_y, per_image.astype(int)):
        assert set(np.unique(shifts)) == set(range(-4, 5))
        assert chi2_uniform(shifts + 4, 9) > 1e-3
    assert chi2_same(shift_y + 4, per_image.astype(int) + 4, 9) > 1e-3


def test_autoaugment_has_no_batch_form() -> None:
    with pytest.raises(ValueError, match="no batch form"):
        BatchAugmentation(["all"])
    with pytest.raises(ValueError, match="at least 16x16"):
        BatchAugmentation(["cutout"], image_size=(8, 8))
