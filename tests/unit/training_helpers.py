"""A tiny random-init XLM-R encoder and its tokenizer, built offline for training tests.

The tokenizer is trained on the training fixtures' own text, so every fixture sentence tokenizes
into real pieces; dropout is 0 so that runs with the same seed are comparable across world sizes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "training"
HIDDEN = 32
LAYERS = 2
MAX_POSITIONS = 130


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def fixture_corpus() -> list[str]:
    lines: list[str] = []
    for path in sorted(FIXTURES.rglob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                lines.extend(_strings(json.loads(line)))
    return lines


def build_tiny_xlmr(out_dir: Path, *, seed: int = 0, vocab_size: int = 600) -> Path:
    """Save a 2-layer, hidden-32 XLMRobertaModel plus tokenizer.json that AutoTokenizer loads."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizerFast

    from training.demo.tokenizer import train_demo_tokenizer
    from training.tokenization import BOS, EOS, MASK, PAD, PAD_ID, UNK

    raw = train_demo_tokenizer(fixture_corpus(), vocab_size)
    tokenizer = XLMRobertaTokenizerFast(
        tokenizer_object=raw,
        bos_token=BOS,
        eos_token=EOS,
        sep_token=EOS,
        cls_token=BOS,
        unk_token=UNK,
        pad_token=PAD,
        mask_token=MASK,
        model_max_length=MAX_POSITIONS - 2,
    )
    config = XLMRobertaConfig(
        vocab_size=raw.get_vocab_size(),
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=2,
        intermediate_size=2 * HIDDEN,
        max_position_embeddings=MAX_POSITIONS,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        type_vocab_size=1,
        pad_token_id=PAD_ID,
        bos_token_id=0,
        eos_token_id=2,
    )
    torch.manual_seed(seed)
    model = XLMRobertaModel(config, add_pooling_layer=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
