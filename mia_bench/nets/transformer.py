"""A small Transformer encoder for token-id text classification, trained from scratch."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def check_token_ids(ids: torch.Tensor, vocab_size: int, net: str) -> None:
    """Raise a clear error when token ids do not fit the net's vocabulary.

    Args:
        ids: token ids ``[B, L]`` (integers, pad id 0).
        vocab_size: number of rows of the net's token embedding.
        net: the net's name, for the message.

    Raises:
        ValueError: an id is negative or ``>= vocab_size`` (the datamodule's vocabulary
            and the net's do not match), or ``ids`` is not an integer tensor.

    >>> check_token_ids(torch.tensor([[5, 0]]), 6, "Net")
    >>> check_token_ids(torch.tensor([[6, 0]]), 6, "Net")
    Traceback (most recent call last):
    ...
    ValueError: Net got token id 6 but its vocabulary has 6 ids (0..5). ...
    """
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise ValueError(f"{net} takes integer token ids [B, L], got a {ids.dtype} tensor")
    if ids.numel() == 0:
        return
    low, high = torch.stack(torch.aminmax(ids)).tolist()  # one device sync
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise ValueError(
            f"{net} got token id {bad} but its vocabulary has {vocab_size} ids "
            f"(0..{vocab_size - 1}). The datamodule's vocabulary must match the net's: "
            "align `data.tokenizer` / `data.vocab_size` with "
            "`model.net.init_args.pretrained` / `model.net.init_args.vocab_size`."
        )


def masked_mean(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` ``[B, T, D]`` over the tokens where ``keep`` ``[B, T]`` is True.

    A row with no kept token gives zeros (never NaN).

    >>> masked_mean(torch.ones(2, 3, 1), torch.tensor([[1, 1, 0], [0, 0, 0]]).bool()).squeeze(1)
    tensor([1., 0.])
    """
    weight = keep.unsqueeze(-1).to(x.dtype)  # [B, T, 1]
    return (x * weight).sum(1) / weight.sum(1).clamp(min=1.0)  # [B, D]


class TextTransformer(nn.Module):
    """Token embedding + learned positions, Transformer encoder layers, masked mean.

    Layers a hook can name, shallow to deep: ``token_embed`` (``[B, L, dim]``),
    ``layers.0`` .. ``layers.{depth-1}`` (tokens ``[B, L, dim]``, averaged over all
    tokens by ``capture_outputs``), ``embedding`` (mean over non-pad tokens, ``[B, dim]``).

    Args:
        input_shape: ``(L,)``, the padded sequence length; inputs are ``LongTensor[B, L]``
            token ids with pad id 0.
        num_classes: number of output logits.
        vocab_size: rows of the token embedding; must match the datamodule's vocabulary.
        dim: token width (the embedding size).
        depth: number of ``nn.TransformerEncoderLayer`` (post-norm, GELU).
        heads: attention heads (``dim`` must be divisible by it).
        ff_dim: feed-forward hidden width.
        dropout: dropout in the layers and before the head.
        max_length: number of learned positions (default ``L``); inputs longer than
            this are rejected.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        vocab_size: int = 20000,
        dim: int = 128,
        depth: int = 2,
        heads: int = 4,
        ff_dim: int = 256,
        dropout: float = 0.1,
        max_length: int | None = None,
    ) -> None:
        super().__init__()
        if len(input_shape) != 1:
            raise ValueError(
                f"TextTransformer needs input_shape (L,) of token ids, got {tuple(input_shape)}"
            )
        if dim % heads:
            raise ValueError(f"TextTransformer dim={dim} must be divisible by heads={heads}")
        self.vocab_size = vocab_size
        self.max_length = max_length or int(input_shape[0])
        self.token_embed = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.max_length, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                dim, heads, ff_dim, dropout, activation="gelu", batch_first=True
            )
            for _ in range(depth)
        )
        self.dropout = nn.Dropout(dropout)
        self.embedding = nn.Identity()
        self.head = nn.Linear(dim, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Map token ids ``[B, L]`` (pad 0) to logits ``[B, num_classes]``."""
        check_token_ids(ids, self.vocab_size, type(self).__name__)
        if ids.shape[1] > self.max_length:
            raise ValueError(
                f"TextTransformer got sequences of length {ids.shape[1]} > max_length="
                f"{self.max_length}; raise model.net.init_args.max_length"
            )
        keep = ids != 0  # [B, L]
        # an all-pad row would attend to nothing (NaN): let it attend to its first token
        pad_mask = ~keep  # [B, L], True = ignore
        pad_mask[:, 0] &= keep.any(dim=1)
        x = self.token_embed(ids) + self.pos_embed[:, : ids.shape[1]]  # [B, L, D]
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=pad_mask)  # [B, L, D]
        x = self.embedding(self.dropout(masked_mean(x, keep)))  # [B, D]
        return self.head(x)  # [B, C]
