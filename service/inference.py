"""Text in, predictions out: tokenize, run the backend in slices, turn logits into predictions."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from export.features import TextPair

from service.errors import InvalidInput, PayloadTooLarge
from service.metrics import ServiceMetrics
from service.repository import LoadedModel
from service.schemas import Prediction, TextInput
from service.settings import Settings
from service.validation import find_text_problem


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


def predict_pairs(
    model: LoadedModel, pairs: Sequence[TextPair], settings: Settings, metrics: ServiceMetrics
) -> list[Prediction]:
    """Blocking: run it in a worker thread, never on the event loop."""
    began = time.perf_counter()
    size = settings.inference_batch_size
    batches = [model.tokenizer.encode(pairs[i : i + size]) for i in range(0, len(pairs), size)]
    metrics.tokenize_duration.labels(model.name, model.version).observe(time.perf_counter() - began)
    truncated_flags = [flag for batch in batches for flag in batch.truncated]
    if settings.on_overlength == "reject" and any(truncated_flags):
        too_long = [i for i, cut in enumerate(truncated_flags) if cut]
        raise PayloadTooLarge(
            f"inputs {too_long} exceed model {model.name}'s max sequence length of "
            f"{model.manifest.max_sequence_length} tokens: shorten them (or let the server "
            "truncate them with POLYPROBE_ON_OVERLENGTH=truncate)"
        )
    predictions: list[Prediction] = []
    for batch in batches:
        started = time.perf_counter()
        logits = model.backend.run(batch.feeds)
        metrics.inference_duration.labels(model.name, model.version).observe(
            time.perf_counter() - started
        )
        predictions.extend(
            to_predictions(logits, model.manifest.labels, batch.truncated, batch.num_tokens)
        )
    truncated = sum(p.truncated for p in predictions)
    if truncated:
        metrics.truncated_inputs.labels(model.name).inc(truncated)
    return predictions
