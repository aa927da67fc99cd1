"""What every peer app shares: the predict body it accepts and the bundle files it reads.

The peers answer polyprobe's own route and body (`POST /v1/models/{model}/predict` with
`{"inputs": [{"text", "text_pair"}]}`), so one load generator drives them all with the same bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class BundleFiles:
    model: Path
    tokenizer: Path
    labels: list[str]
    max_length: int
    input_names: list[str]


def bundle_files(bundle_dir: Path, precision: str = "fp32") -> BundleFiles:
    """The bundle's variant of the given precision, read from bundle.json as plain JSON."""
    manifest = json.loads((bundle_dir / "bundle.json").read_text("utf-8"))
    (variant,) = [m for m in manifest["models"] if m["precision"] == precision]
    return BundleFiles(
        model=bundle_dir / variant["path"],
        tokenizer=bundle_dir / manifest["tokenizer"]["path"],
        labels=list(manifest["labels"]),
        max_length=int(manifest["max_sequence_length"]),
        input_names=list(manifest["inputs"]),
    )


def pairs_of(body: dict[str, Any]) -> list[tuple[str, str | None]]:
    """The (text, text_pair) tuples of a predict body; ValueError when it has none."""
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ValueError('send {"inputs": [{"text": ..., "text_pair": ...}]}')
    return [(str(item["text"]), item.get("text_pair")) for item in inputs]


def predictions(logits: np.ndarray, labels: list[str]) -> dict[str, Any]:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=-1, keepdims=True)
    return {
        "predictions": [
            {
                "label": labels[int(row.argmax())],
                "probabilities": dict(zip(labels, map(float, row), strict=True)),
            }
            for row in probabilities
        ]
    }
