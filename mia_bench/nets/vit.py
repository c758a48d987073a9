"""A small Vision Transformer for 32-224 px images (CIFAR-size ViTs train from scratch)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention with one fused ``qkv`` projection (timm's layout).

    Faster on CPU than ``nn.MultiheadAttention(batch_first=True)``, which copies its
    inputs between layouts.

    Args:
        dim: token width D (divisible by ``heads``).
        heads: number of attention heads.
        dropout: dropout on the attention weights while training.
    """

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map tokens ``[B, T, D]`` to tokens ``[B, T, D]``."""
        b, t, d = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads)  # [B, T, 3, H, D/H]
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [B, H, T, D/H]
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # [B, H, T, D/H]
        return self.proj(out.transpose(1, 2).reshape(b, t, d))  # [B, T, D]


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``.

    Args:
        dim: token width D.
        heads: attention heads (``dim`` must be divisible by it).
        mlp_ratio: hidden width of the MLP as a multiple of ``dim``.
        dropout: dropout on the attention weights and after each MLP layer.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map tokens ``[B, T, D]`` to tokens ``[B, T, D]``."""
        x = x + self.attn(self.norm1(x))  # [B, T, D]
        return x + self.mlp(self.norm2(x))  # [B, T, D]


class ViT(nn.Module):
    """Vision Transformer: conv patch embedding, class token, pre-norm blocks, head.

    Layers a hook can name, shallow to deep: ``patch_embed`` (the patch grid
    ``[B, dim, H/p, W/p]``, flattened), ``blocks.0`` .. ``blocks.{depth-1}`` (tokens
    ``[B, T, D]``, averaged over tokens by ``capture_outputs``), ``norm``, ``embedding``
    (the normalized class-token output, ``[B, dim]``).

    Args:
        input_shape: ``(channels, height, width)``; height and width divisible by
            ``patch_size``.
        num_classes: number of output logits.
        patch_size: side p of the square patches (4 suits 32-64 px, 16 suits 224 px).
        dim: token width D (the embedding size).
        depth: number of transformer blocks.
        heads: attention heads per block (``dim`` must be divisible by it).
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        dropout: dropout in the blocks, after the position embedding and before the head.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        patch_size: int = 4,
        dim: int = 192,
        depth: int = 6,
        heads: int = 3,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"ViT needs input_shape (C, H, W), got {tuple(input_shape)}")
        c, h, w = input_shape
        if h % patch_size or w % patch_size:
            raise ValueError(
                f"ViT image size {h}x{w} is not divisible by patch_size={patch_size}: "
                "choose a patch_size that divides both height and width (e.g. 4 for 32 px)"
            )
        if dim % heads:
            raise ValueError(f"ViT dim={dim} must be divisible by heads={heads}")
        num_patches = (h // patch_size) * (w // patch_size)
        self.patch_embed = nn.Conv2d(c, dim, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.embedding = nn.Identity()
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images ``[B, C, H, W]`` to logits ``[B, num_classes]``."""
        x = self.patch_embed(x)  # [B, D, H/p, W/p]
        x = x.flatten(2).transpose(1, 2)  # [B, N, D]
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # [B, 1, D]
        x = self.pos_drop(torch.cat([cls, x], dim=1) + self.pos_embed)  # [B, T=N+1, D]
        for block in self.blocks:
            x = block(x)  # [B, T, D]
        x = self.embedding(self.dropout(self.norm(x)[:, 0]))  # [B, D]
        return self.head(x)  # [B, C]
