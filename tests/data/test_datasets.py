"""Every dataset: declared shapes, and a clear error when its file is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from mia_bench.data import (
    ALL_DATASETS,
    CIFAR10,
    CIFAR100,
    AGNews,
    CelebA,
    CIFAR10Partial,
    IMDb,
    Location,
    Purchase100,
    Snacks,
    Texas100,
)

GITHUB = "https://github.com/privacytrustlab/datasets/raw/master/"
# class -> (file or folder looked for, under root; what the message must point to)
MISSING = {
    Location: ("dataset_location.tgz", GITHUB + "dataset_location.tgz"),
    Purchase100: ("dataset_purchase.tgz", GITHUB + "dataset_purchase.tgz"),
    Texas100: ("dataset_texas.tgz", GITHUB + "dataset_texas.tgz"),
    CIFAR10: ("cifar-10-batches-py", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
    CIFAR100: ("cifar-100-python", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
    CIFAR10Partial: ("cifar10_partial.npz", "../shared/data/cifar10_partial"),
    CelebA: ("celeba/list_attr_celeba.txt", "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"),
    Snacks: ("train", "https://huggingface.co/datasets/Matthijs/snacks"),
    IMDb: ("imdb.csv.gz", "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"),
    AGNews: ("train.csv", "https://s3.amazonaws.com/fast-ai-nlp/ag_news_csv.tgz"),
}


@pytest.mark.parametrize("cls", ALL_DATASETS, ids=lambda c: c.__name__)
def test_every_dataset_declares_its_shape(cls: type) -> None:
    assert cls.num_classes > 1
    assert len(cls.input_shape) >= 1 and all(d > 0 for d in cls.input_shape)
    assert cls.query_views[0] == "plain"


@pytest.mark.parametrize("cls", list(MISSING), ids=lambda c: c.__name__)
def test_missing_file_error_names_path_and_source(tmp_path: Path, cls: type) -> None:
    looked_for, source = MISSING[cls]
    with pytest.raises(FileNotFoundError) as err:
        _ = cls(root=str(tmp_path / "empty")).pool
    assert str(tmp_path / "empty" / looked_for) in str(err.value)
    assert source in str(err.value)
