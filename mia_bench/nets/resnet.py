"""ResNet-18 with the CIFAR stem (Rahmani et al.'s target model)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models import resnet18


class ResNet18(nn.Module):
    """torchvision's ResNet-18 with a 3x3 stride-1 first conv and no max-pool.

    Layers a hook can name: ``conv1``, ``layer1`` .. ``layer4``, ``embedding``
    (the 512-d pooled features).

    Args:
        input_shape: ``(channels, height, width)`` of one image.
        num_classes: number of output logits.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        base = resnet18(num_classes=num_classes)
        self.conv1 = nn.Conv2d(input_shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1, self.relu = base.bn1, base.relu
        self.layer1, self.layer2 = base.layer1, base.layer2
        self.layer3, self.layer4 = base.layer3, base.layer4
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.embedding = nn.Identity()
        self.head = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # [B, 64, H, W]
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # [B, 512, H/8, W/8]
        x = self.embedding(self.pool(x).flatten(1))  # [B, 512]
        return self.head(x)  # [B, C]
