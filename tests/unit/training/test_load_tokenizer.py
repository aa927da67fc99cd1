from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

pytest.importorskip("transformers", reason="training tests need the train extra")

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]


def _save_large_vocab_xlmr_tokenizer(out_dir: Path) -> None:
    """An XLM-R-style Unigram tokenizer with more than 100k pieces (the warning's size trigger)
    beside a config.json that transformers 4.57.6 wrote (its version trigger)."""
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import Unigram
    from transformers import XLMRobertaTokenizerFast

    pieces = [(token, 0.0) for token in SPECIALS]
    pieces += [(f"▁w{index}", -float(index % 50) - 1.0) for index in range(100_050)]
    pieces += [(char, -100.0) for char in "▁abcdefghijklmnopqrstuvwxyz0123456789"]
    raw = Tokenizer(Unigram(pieces, unk_id=3))
    raw.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer = XLMRobertaTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=raw,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<unk>",
    )
    tokenizer.save_pretrained(out_dir)
    config = {"model_type": "xlm-roberta", "transformers_version": "4.57.6"}
    (out_dir / "config.json").write_text(json.dumps(config))


def test_a_saved_xlmr_tokenizer_loads_without_the_false_mistral_regex_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from transformers.utils import logging as hf_logging

    from training.model import load_tokenizer

    _save_large_vocab_xlmr_tokenizer(tmp_path)
    hf_logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING):
            tokenizer = load_tokenizer(tmp_path)
    finally:
        hf_logging.disable_propagation()
    assert not [record for record in caplog.records if "regex" in record.getMessage()]
    assert tokenizer("w7 w8", add_special_tokens=False)["input_ids"] == [
        tokenizer.convert_tokens_to_ids("▁w7"),
        tokenizer.convert_tokens_to_ids("▁w8"),
    ]
