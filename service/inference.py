"""Text in, predictions out: validate, tokenize each input, pad batches, turn logits into predictions.

The batcher (service.batcher) decides which inputs run together; this module does the per-input
and per-batch work it needs, all of it blocking and meant for worker threads.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from export.features import TextPair
from tokenizers import Tokenizer

from service.errors import InvalidInput, PayloadTooLarge
from service.repository import LoadedModel
from service.schemas import Prediction, TextInput
from service.settings import Settings
from service.validation import find_text_problem

# Requests are tokenized in parallel already (one worker thread each); the tokenizers library's
# own thread pool on top of that fights ONNX Runtime's threads for the cores: 32 pairs took 32 ms
# with it and 1.2 ms without on the 2-core machine. An explicit choice in the environment wins.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return np.asarray(exp / exp.sum(axis=-1, keepdims=True))


def to_predictions(
    logits: np.ndarray, labels: Sequence[str], truncated: Sequence[bool], num_tokens: Sequence[int]
) -> list[Prediction]:
    probabilities = softmax(logits.astype(np.float64))
    ordered = np.sort(probabilities, axis=-1)
    margins = ordered[:, -1] - ordered[:, -2]
    entropies = -np.sum(probabilities * np.log(np.clip(probabilities, 1e-12, 1.0)), axis=-1)
    return [
        Prediction(
            label=labels[int(np.argmax(row))],
            probabilities={label: float(p) for label, p in zip(labels, row, strict=True)},
            margin=float(margin),
            entropy=float(entropy),
            truncated=was_truncated,
            num_tokens=tokens,
        )
        for row, margin, entropy, was_truncated, tokens in zip(
            probabilities, margins, entropies, truncated, num_tokens, strict=True
        )
    ]


def validate_inputs(
    inputs: Sequence[TextInput], model: LoadedModel, settings: Settings
) -> list[TextPair]:
    """Reject what the model cannot take, naming the input and what to change."""
    if not inputs:
        raise InvalidInput('inputs is empty: send at least one {"text": ...} object')
    if len(inputs) > settings.max_inputs_per_request:
        raise PayloadTooLarge(
            f"{len(inputs)} inputs in one request; the limit is {settings.max_inputs_per_request}"
            " (POLYPROBE_MAX_INPUTS_PER_REQUEST): split the request"
        )
    is_pair_model = model.manifest.task == "pair-classification"
    pairs: list[TextPair] = []
    for index, item in enumerate(inputs):
        for field, value in (("text", item.text), ("text_pair", item.text_pair)):
            if value is None:
                continue
            if len(value) > settings.max_text_chars:
                raise PayloadTooLarge(
                    f"inputs[{index}].{field} has {len(value)} characters; the limit is "
                    f"{settings.max_text_chars} (POLYPROBE_MAX_TEXT_CHARS): shorten it"
                )
            problem = find_text_problem(value)
            if problem is not None:
                raise InvalidInput(
                    f"inputs[{index}].{field} contains a {problem.describe()}: remove it",
                    details=[{"input": index, "field": field, "position": problem.position}],
                )
        if is_pair_model and item.text_pair is None:
            raise InvalidInput(
                f"inputs[{index}] has no text_pair: model {model.name} classifies sentence pairs"
            )
        if not is_pair_model and item.text_pair is not None:
            raise InvalidInput(
                f"inputs[{index}] has a text_pair: model {model.name} classifies single texts"
            )
        pairs.append((item.text, item.text_pair))
    return pairs


def padded_length(length: int, multiple: int) -> int:
    """`length` rounded up to a multiple of `multiple` (GPU kernels like multiples of 8)."""
    return -(-length // multiple) * multiple


@dataclass(frozen=True)
class EncodedInput:
    """One tokenized input, unpadded: the batcher pads it to its batch's longest."""

    ids: np.ndarray  # int64
    type_ids: np.ndarray  # int64
    truncated: bool

    @property
    def length(self) -> int:
        return len(self.ids)


class InputEncoder:
    """Encodes inputs one by one (no padding) and pads a chosen set of them into one batch.

    It loads the bundle's tokenizer with the same truncation as `export.features.BundleTokenizer`
    (the parity-checked contract) and pads as it does: `<pad>` ids, attention mask 0, type id 0;
    only the moment of padding moves, from the request to the batch.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        max_length: int,
        input_names: Sequence[str],
        pad_to_multiple_of: int = 1,
    ) -> None:
        pad_id = tokenizer.token_to_id("<pad>")
        if pad_id is None:
            raise ValueError("tokenizer has no <pad> token")
        tokenizer.enable_truncation(max_length, strategy="longest_first")
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        self._pad_id = int(pad_id)
        self._multiple = pad_to_multiple_of
        self.max_length = max_length
        self.input_names = tuple(input_names)

    @classmethod
    def from_bundle(cls, model: LoadedModel, *, pad_to_multiple_of: int = 1) -> InputEncoder:
        path = model.location.path / model.manifest.tokenizer.path
        return cls(
            Tokenizer.from_file(str(path)),
            max_length=model.manifest.max_sequence_length,
            input_names=model.backend.input_names,
            pad_to_multiple_of=pad_to_multiple_of,
        )

    def encode(self, pairs: Sequence[TextPair]) -> list[EncodedInput]:
        """Blocking; `tokenizers` encodes the batch in Rust with the GIL released."""
        encodings = self._tokenizer.encode_batch(
            [text if pair is None else (text, pair) for text, pair in pairs]
        )
        return [
            EncodedInput(
                ids=np.asarray(e.ids, dtype=np.int64),
                type_ids=np.asarray(e.type_ids, dtype=np.int64),
                truncated=bool(e.overflowing),
            )
            for e in encodings
        ]

    def collate(self, inputs: Sequence[EncodedInput]) -> dict[str, np.ndarray]:
        """The ONNX feeds of one batch, padded to its own longest input."""
        lengths = np.fromiter((item.length for item in inputs), dtype=np.int64, count=len(inputs))
        width = padded_length(int(lengths.max()), self._multiple)
        ids = np.full((len(inputs), width), self._pad_id, dtype=np.int64)
        type_ids = np.zeros((len(inputs), width), dtype=np.int64)
        for row, item in enumerate(inputs):
            ids[row, : item.length] = item.ids
            type_ids[row, : item.length] = item.type_ids
        mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
        available = {"input_ids": ids, "attention_mask": mask, "token_type_ids": type_ids}
        return {name: available[name] for name in self.input_names}

    def dummy_feeds(self, length: int, batch_size: int = 1) -> dict[str, np.ndarray]:
        """Feeds of `batch_size` rows of `length` real tokens, for warm-up."""
        row = EncodedInput(
            ids=np.full(length, self._pad_id, dtype=np.int64),
            type_ids=np.zeros(length, dtype=np.int64),
            truncated=False,
        )
        return self.collate([row] * batch_size)
