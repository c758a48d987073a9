"""Membership pools: one DataModule per dataset, all sharing the keep-matrix design."""

from mia_bench.data.ag_news import AGNews
from mia_bench.data.celeba import CelebA
from mia_bench.data.cifar import CIFAR10, CIFAR100, CIFAR10Partial, ImageMembershipDataModule
from mia_bench.data.dataset_membership import DatasetMembership, pool_of_dataset
from mia_bench.data.digits import Digits
from mia_bench.data.imdb import IMDb
from mia_bench.data.location import Location
from mia_bench.data.membership import MembershipDataModule, Pool, PoolDataset
from mia_bench.data.purchase100 import Purchase100
from mia_bench.data.snacks import Snacks
from mia_bench.data.synthetic import SyntheticImages
from mia_bench.data.tabular import TabularMembershipDataModule
from mia_bench.data.texas100 import Texas100
from mia_bench.data.text import TextMembershipDataModule

ALL_DATASETS: tuple[type[MembershipDataModule], ...] = (
    Digits,
    Location,
    Purchase100,
    Texas100,
    CIFAR10,
    CIFAR100,
    CIFAR10Partial,
    CelebA,
    Snacks,
    IMDb,
    AGNews,
)

__all__ = [
    "AGNews",
    "ALL_DATASETS",
    "CIFAR10",
    "CIFAR100",
    "CIFAR10Partial",
    "CelebA",
    "DatasetMembership",
    "Digits",
    "IMDb",
    "ImageMembershipDataModule",
    "Location",
    "MembershipDataModule",
    "Pool",
    "PoolDataset",
    "Purchase100",
    "pool_of_dataset",
    "Snacks",
    "SyntheticImages",
    "TabularMembershipDataModule",
    "Texas100",
    "TextMembershipDataModule",
]
