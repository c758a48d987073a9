"""The small CNN for 32x32 images (the Embedding Attack Project's CIFAR-10 / CelebA target)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
    )


class CNN(nn.Module):
    """Three conv blocks (conv3x3 + ReLU + max-pool 2), a dense layer, then the head.

    Layers a hook can name: ``conv1``, ``conv2``, ``conv3``, ``fc``, ``embedding``.

    Args:
        input_shape: ``(channels, height, width)``; height and width divisible by 8.
        num_classes: number of output logits.
        channels: widths of the three conv blocks.
        hidden: width of the dense layer before the head (the embedding size).
        dropout: dropout before the head.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (32, 64, 128),
        hidden: int = 256,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(input_shape) != 3 or input_shape[1] % 8 or input_shape[2] % 8:
            raise ValueError(
                f"CNN needs input_shape (C, H, W) with H and W divisible by 8, got {input_shape}"
            )
        c, h, w = input_shape
        c1, c2, c3 = channels
        self.conv1 = _conv_block(c, c1)
        self.conv2 = _conv_block(c1, c2)
        self.conv3 = _conv_block(c2, c3)
        self.fc = nn.Sequential(
            nn.Flatten(), nn.Linear(c3 * (h // 8) * (w // 8), hidden), nn.ReLU()
        )
        self.embedding = nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3(self.conv2(self.conv1(x)))  # [B, c3, H/8, W/8]
        x = self.embedding(self.fc(x))  # [B, hidden]
        return self.head(self.dropout(x))  # [B, C]
