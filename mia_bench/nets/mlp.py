"""Fully connected net for tabular data (Location, Purchase100, Texas100, digits)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """``in -> hidden... -> embedding -> head``; the last hidden layer is the embedding.

    Args:
        input_shape: shape of one example; flattened to ``prod(input_shape)`` features.
        num_classes: number of output logits.
        hidden: widths of the hidden layers (``fc0, fc1, ...``).
        dropout: dropout probability after each hidden activation.
        activation: ``"relu"`` or ``"tanh"`` (Shokri et al. 2017 used tanh).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        hidden: Sequence[int] = (256, 128),
        dropout: float = 0.0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if activation not in ("relu", "tanh"):
            raise ValueError(f"activation must be 'relu' or 'tanh', got {activation!r}")
        act = nn.ReLU if activation == "relu" else nn.Tanh
        widths = [math.prod(input_shape), *hidden]
        self.blocks = [f"fc{i}" for i in range(len(hidden))]
        for name, a, b in zip(self.blocks, widths[:-1], widths[1:], strict=True):
            self.add_module(name, nn.Sequential(nn.Linear(a, b), act(), nn.Dropout(dropout)))
        self.embedding = nn.Identity()
        self.head = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # [B, D]
        for name in self.blocks:
            x = getattr(self, name)(x)
        return self.head(self.embedding(x))  # [B, C]
