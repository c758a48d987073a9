"""The signal pass sends all query views of a batch through one forward (chunked):
its logits and embeddings equal one forward per view, the path it replaced."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.baseline.signals import per_view_signals
from mia_bench.augment import query_views
from mia_bench.callbacks.signal_recorder import compute_signals


class BatchNormCNN(nn.Module):
    """A CNN whose BatchNorm would mix examples if it ran in training mode."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.fc = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 16))
        self.embedding = nn.Identity()
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(self.fc(self.conv(x))))  # [B, 5]


ALL_AT_ONCE = {"forward_batch_size": 4096}  # every view of a batch in one forward


@pytest.fixture(scope="module")
def net_and_loader():
    torch.manual_seed(0)
    net = BatchNormCNN()
    with torch.no_grad():  # running statistics far from their init, so eval mode matters
        for _ in range(3):
            net(torch.randn(64, 3, 12, 12) * 3 + 1)
    x = torch.randn(50, 3, 12, 12)
    data = TensorDataset(x, torch.randint(0, 5, (50,)), torch.arange(50))
    return net, DataLoader(data, batch_size=16)  # batches of 16, 16, 16, 2


@pytest.mark.parametrize("views", ["plain", "plain,mirror", "lira18"])
@pytest.mark.parametrize("forward_batch_size", [1, 40, 4096])  # 1 view, 2 views, all at once
def test_batched_views_equal_one_forward_per_view(net_and_loader, views, forward_batch_size):
    net, loader = net_and_loader
    old_logits, old_embeddings = per_view_signals(net, loader, views, ["embedding", "conv"])
    net.train()
    new = compute_signals(
        net, loader, views, ["embedding", "conv"], forward_batch_size=forward_batch_size
    )
    assert net.training  # restored
    assert new.logits.shape == old_logits.shape == (50, len(query_views(views)), 5)
    assert new.logits.dtype == old_logits.dtype
    torch.testing.assert_close(new.logits, old_logits, rtol=1e-5, atol=1e-5)
    for name in ("embedding", "conv"):  # view 0's only: [N, D], not [A*N, D]
        assert new.embeddings[name].shape == old_embeddings[name].shape
        torch.testing.assert_close(new.embeddings[name], old_embeddings[name], rtol=1e-5, atol=1e-5)


def test_views_are_not_mixed_up(net_and_loader):
    """Each view's column holds that view's logits: a permutation of the views moves them."""
    net, loader = net_and_loader
    forward = compute_signals(net, loader, ["plain", "mirror", "shift_1_0"], (), **ALL_AT_ONCE)
    swapped = compute_signals(net, loader, ["plain", "shift_1_0", "mirror"], (), **ALL_AT_ONCE)
    torch.testing.assert_close(forward.logits[:, [0, 2, 1]], swapped.logits)
    assert not torch.allclose(
        torch.from_numpy(forward.logits[:, 1]), torch.from_numpy(forward.logits[:, 2])
    )


def test_channels_last_records_the_same_signals(net_and_loader):
    net, loader = net_and_loader
    plain = compute_signals(net, loader, "lira18", ["embedding"])
    net.to(memory_format=torch.channels_last)
    try:
        fast = compute_signals(
            net, loader, "lira18", ["embedding"], memory_format="channels_last", **ALL_AT_ONCE
        )
    finally:
        net.to(memory_format=torch.contiguous_format)
    torch.testing.assert_close(fast.logits, plain.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        fast.embeddings["embedding"], plain.embeddings["embedding"], rtol=1e-5, atol=1e-5
    )
