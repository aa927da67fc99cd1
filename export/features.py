"""How a bundle's tokenizer turns text (pairs) into ONNX feeds: part of the bundle contract.

Torch-free: the service encodes requests with this, and the exporter's parity check uses the same
code, so "parity" means parity of exactly what is served.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

TextPair = tuple[str, str | None]


@dataclass(frozen=True)
class EncodedBatch:
    feeds: dict[str, np.ndarray]
    truncated: list[bool]
    num_tokens: list[int]

    @property
    def padded_length(self) -> int:
        return int(self.feeds["input_ids"].shape[1])


class BundleTokenizer:
    """A `tokenizers` tokenizer fixed to the bundle's max length, padding each batch to its longest."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        max_length: int,
        input_names: Sequence[str],
        pad_to_multiple_of: int | None = None,
    ) -> None:
        pad_id = tokenizer.token_to_id("<pad>")
        if pad_id is None:
            raise ValueError("tokenizer has no <pad> token")
        tokenizer.enable_truncation(max_length, strategy="longest_first")
        tokenizer.enable_padding(
            pad_id=pad_id, pad_token="<pad>", pad_to_multiple_of=pad_to_multiple_of
        )
        self._tokenizer = tokenizer
        self.max_length = max_length
        self.input_names = tuple(input_names)

    @classmethod
    def from_file(
        cls,
        path: Path,
        *,
        max_length: int,
        input_names: Sequence[str],
        pad_to_multiple_of: int | None = None,
    ) -> BundleTokenizer:
        return cls(
            Tokenizer.from_file(str(path)),
            max_length=max_length,
            input_names=input_names,
            pad_to_multiple_of=pad_to_multiple_of,
        )

    def encode(self, pairs: Sequence[TextPair]) -> EncodedBatch:
        """Encode a batch; inputs longer than max_length are truncated and flagged."""
        encodings = self._tokenizer.encode_batch(
            [text if pair is None else (text, pair) for text, pair in pairs]
        )
        available = {
            "input_ids": lambda: [e.ids for e in encodings],
            "attention_mask": lambda: [e.attention_mask for e in encodings],
            "token_type_ids": lambda: [e.type_ids for e in encodings],
        }
        feeds = {name: np.asarray(available[name](), dtype=np.int64) for name in self.input_names}
        return EncodedBatch(
            feeds=feeds,
            truncated=[bool(e.overflowing) for e in encodings],
            num_tokens=[sum(e.attention_mask) for e in encodings],
        )

    def normalize(self, text: str) -> str:
        """The tokenizer's own normalisation, for spotting edits it would erase."""
        normalizer = self._tokenizer.normalizer
        return text if normalizer is None else normalizer.normalize_str(text)
