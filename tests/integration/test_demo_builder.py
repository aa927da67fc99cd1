"""Build the real demo checkpoint offline and check that it learned, reloads and is reproducible."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the demo builder needs the train extra (torch)")
pytest.importorskip("transformers", reason="the demo builder needs the train extra (transformers)")

import torch
from tokenizers import Tokenizer
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from training.demo.builder import (
    DemoCheckpoint,
    DemoConfig,
    build_demo_checkpoint,
    verify_tokenizer_roundtrip,
)
from training.demo.corpus import LANGUAGES, sentences
from training.demo.pairs import LABELS, make_pairs, split_keys

pytestmark = pytest.mark.integration

# `demo_checkpoint` is the session-wide default build (seed 0) from tests/integration/conftest.py:
# one ~25 s build serves these tests and the bundle and server tests alike.

# Random guessing on the balanced task scores about 0.5; a model that ignores the second sentence
# or matches only one slot cannot pass this either.
MIN_HELDOUT_ACCURACY = 0.75
TINY = DemoConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, steps=20)


def test_checkpoint_learned_the_task_on_held_out_keys(demo_checkpoint: DemoCheckpoint) -> None:
    assert demo_checkpoint.labels == list(LABELS)
    assert demo_checkpoint.heldout_accuracy > MIN_HELDOUT_ACCURACY
    assert demo_checkpoint.train_accuracy > MIN_HELDOUT_ACCURACY
    per_lang = demo_checkpoint.per_language_heldout_accuracy
    assert set(per_lang) == set(LANGUAGES)
    assert sum(v["n"] for v in per_lang.values()) == demo_checkpoint.heldout_n
    assert all(0.0 <= v["accuracy"] <= 1.0 for v in per_lang.values())
    for subject, place in split_keys(demo_checkpoint.seed).heldout:
        assert f"{subject}@{place}" in demo_checkpoint.data_description


def test_saved_checkpoint_reloads_and_scores_held_out_pairs_on_its_own(
    demo_checkpoint: DemoCheckpoint,
) -> None:
    # Re-score from the files alone, so the builder's reported number is not taken on trust.
    config = json.loads((demo_checkpoint.path / "config.json").read_text())
    assert config["id2label"] == {"0": "not_paraphrase", "1": "paraphrase"}
    assert config["max_position_embeddings"] == demo_checkpoint.max_length + 2
    assert config["pad_token_id"] == 1
    model = AutoModelForSequenceClassification.from_pretrained(demo_checkpoint.path).eval()
    tokenizer = AutoTokenizer.from_pretrained(demo_checkpoint.path)
    split = split_keys(demo_checkpoint.seed)
    pairs = make_pairs(
        sentences(split.heldout), split.heldout, pairs_per_anchor=1, seed="independent-check"
    )
    batch = tokenizer(
        [p.a.text for p in pairs], [p.b.text for p in pairs], padding=True, return_tensors="pt"
    )
    with torch.inference_mode():
        predicted = model(**batch).logits.argmax(-1)
    gold = torch.tensor([p.label for p in pairs])
    assert (predicted == gold).float().mean().item() > MIN_HELDOUT_ACCURACY


def test_transformers_and_tokenizers_agree_on_pairs(demo_checkpoint: DemoCheckpoint) -> None:
    raw = Tokenizer.from_file(str(demo_checkpoint.path / "tokenizer.json"))
    hf = AutoTokenizer.from_pretrained(demo_checkpoint.path)
    pairs = [("The cat is in the garden.", "猫は庭にいます。"), ("แมวอยู่ในสวน", "القطة في الحديقة.")]
    for a, b in pairs:
        ids = raw.encode(a, b).ids
        assert ids == hf(a, b)["input_ids"]
        assert ids[0] == 0 and ids[-1] == 2 and ids.count(2) == 3
    assert raw.token_to_id("<pad>") == 1 and raw.token_to_id("<unk>") == 3
    assert raw.token_to_id("<mask>") == raw.get_vocab_size() - 1
    verify_tokenizer_roundtrip(demo_checkpoint.path, pairs)


def _digests(path: Path) -> dict[str, str]:
    return {
        name: hashlib.sha256((path / name).read_bytes()).hexdigest()
        for name in ("model.safetensors", "tokenizer.json", "config.json")
    }


def test_same_seed_builds_identical_checkpoints(tmp_path: Path) -> None:
    first = build_demo_checkpoint(tmp_path / "a", TINY, progress=False)
    second = build_demo_checkpoint(tmp_path / "b", TINY, progress=False)
    other = build_demo_checkpoint(tmp_path / "c", replace(TINY, seed=1), progress=False)
    assert _digests(first.path) == _digests(second.path)
    assert first.heldout_accuracy == second.heldout_accuracy
    assert _digests(other.path)["model.safetensors"] != _digests(first.path)["model.safetensors"]
