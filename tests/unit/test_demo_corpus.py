"""The demo corpus and its pair task: coverage, well-formed text, honest splits, determinism."""

from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import replace

import pytest

from training.demo import corpus
from training.demo.corpus import (
    CORPUS,
    LANGUAGES,
    PLACES,
    SUBJECTS,
    all_keys,
    corpus_sha256,
    lexicon_entries,
    render,
    sentences,
)
from training.demo.pairs import LABELS, PARAPHRASE, PairExample, make_pairs, split_keys
from training.demo.tokenizer import train_demo_tokenizer
from training.tokenization import train_xlmr_unigram_tokenizer

REQUIRED = {"en", "de", "es", "fr", "ja", "ko", "zh", "ar", "hi", "th", "ru"}

# Unicode character-name prefixes allowed for the letters and marks of each language.
SCRIPTS: dict[str, tuple[str, ...]] = {
    "en": ("LATIN",),
    "de": ("LATIN",),
    "es": ("LATIN",),
    "fr": ("LATIN",),
    "ja": ("CJK UNIFIED IDEOGRAPH", "HIRAGANA", "KATAKANA"),
    "ko": ("HANGUL SYLLABLE",),
    "zh": ("CJK UNIFIED IDEOGRAPH",),
    "ar": ("ARABIC",),
    "hi": ("DEVANAGARI",),
    "th": ("THAI",),
    "ru": ("CYRILLIC",),
}
FINAL_PUNCTUATION = {"ja": "。", "zh": "。", "hi": "।", "th": ""}

ALL_SENTENCES = sentences(all_keys())


def test_corpus_covers_the_required_languages_and_every_concept() -> None:
    assert set(LANGUAGES) >= REQUIRED
    for lang, lexicon in CORPUS.items():
        assert set(lexicon.subjects) == set(SUBJECTS), lang
        assert set(lexicon.places) == set(PLACES), lang
        assert len(lexicon.templates) >= 2, lang


@pytest.mark.parametrize("lang", sorted(REQUIRED))
def test_sentences_are_well_formed(lang: str) -> None:
    texts = [s.text for s in ALL_SENTENCES if s.lang == lang]
    assert len(texts) == len(all_keys()) * len(CORPUS[lang].templates)
    for text in texts:
        assert text and text == text.strip(), text
        assert "  " not in text and "{" not in text and "}" not in text, text
        assert unicodedata.normalize("NFC", text) == text, text
        assert text.endswith(FINAL_PUNCTUATION.get(lang, ".")), text
        for ch in text:
            if unicodedata.category(ch)[0] in "LM":
                assert unicodedata.name(ch).startswith(SCRIPTS[lang]), (text, ch)
        if lang in {"en", "de", "es", "fr", "ru"}:
            assert text[0].isupper(), text
    if lang == "th":
        assert not any(" " in t for t in texts), "Thai is written without spaces"


def test_every_sentence_names_exactly_one_meaning_within_its_language() -> None:
    # If two keys rendered to the same text in one language, pair labels would be wrong.
    by_text: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for s in ALL_SENTENCES:
        by_text.setdefault((s.lang, s.text), set()).add(s.key)
    assert all(len(keys) == 1 for keys in by_text.values())


def test_slot_spans_point_at_the_slot_words() -> None:
    for s in ALL_SENTENCES:
        lexicon = CORPUS[s.lang]
        subject = s.text[slice(*s.subject_span)].casefold()
        place = s.text[slice(*s.place_span)].casefold()
        assert subject in {f.casefold() for f in lexicon.subjects[s.subject].values()}, s
        assert place in {f.casefold() for f in lexicon.places[s.place].values()}, s


def test_render_examples_read_naturally() -> None:
    assert render("en", 0, ("cat", "garden")).text == "The cat is in the garden."
    assert render("ja", 0, ("cat", "garden")).text == "猫は庭にいます。"
    assert render("hi", 0, ("cat", "garden")).text == "बिल्ली बगीचे में है।"
    assert render("ko", 1, ("horse", "roof")).text == "지붕 위에 말이 있습니다."


def test_corpus_hash_is_stable_and_tracks_the_data(monkeypatch: pytest.MonkeyPatch) -> None:
    digest = corpus_sha256()
    assert digest == corpus_sha256() and len(digest) == 64
    edited = dict(CORPUS)
    edited["en"] = replace(CORPUS["en"], templates=("{s[def]} sits {p[at]}.",))
    monkeypatch.setattr(corpus, "CORPUS", edited)
    assert corpus_sha256() != digest


def test_split_holds_out_a_disjoint_balanced_set_of_keys() -> None:
    split = split_keys(seed=0, heldout_per_subject=2)
    train, heldout = set(split.train), set(split.heldout)
    assert not train & heldout
    assert train | heldout == set(all_keys())
    assert Counter(s for s, _ in heldout) == dict.fromkeys(SUBJECTS, 2)
    assert Counter(p for _, p in heldout) == dict.fromkeys(PLACES, 2)
    # Every word is still trained on, so held-out accuracy measures composition.
    assert {s for s, _ in train} == set(SUBJECTS) and {p for _, p in train} == set(PLACES)
    assert split_keys(seed=0) == split
    assert split_keys(seed=1) != split
    for key in split.heldout:
        assert f"{key[0]}@{key[1]}" in split.describe()


def _pairs(seed: int) -> list[PairExample]:
    split = split_keys(seed=0)
    return make_pairs(sentences(split.train), split.train, pairs_per_anchor=3, seed=seed)


def test_pair_generation_is_deterministic_under_a_seed() -> None:
    assert _pairs(seed=7) == _pairs(seed=7)
    assert _pairs(seed=7) != _pairs(seed=8)


def test_pair_labels_follow_meaning_keys_and_are_balanced() -> None:
    assert LABELS == ("not_paraphrase", "paraphrase")
    pairs = _pairs(seed=0)
    for p in pairs:
        assert (p.label == PARAPHRASE) == (p.a.key == p.b.key)
        if p.label == PARAPHRASE:
            assert p.a.text != p.b.text, "a paraphrase must not be a copy"
    counts = Counter(p.label for p in pairs)
    assert counts[0] == counts[1]
    negatives = [p for p in pairs if p.label != PARAPHRASE]
    one_slot = sum((p.a.subject == p.b.subject) != (p.a.place == p.b.place) for p in negatives)
    assert 0.65 < one_slot / len(negatives) < 0.85  # hard_negative_rate defaults to 0.75
    cross = sum(p.a.lang != p.b.lang for p in pairs)
    assert 0.4 < cross / len(pairs) < 0.6  # cross_lingual_rate defaults to 0.5
    assert {p.a.lang for p in pairs} == set(LANGUAGES)
    assert {p.b.lang for p in pairs} == set(LANGUAGES)


def test_pairs_never_leave_their_side_of_the_split() -> None:
    split = split_keys(seed=3)
    heldout = make_pairs(sentences(split.heldout), split.heldout, pairs_per_anchor=2, seed="eval")
    train = make_pairs(sentences(split.train), split.train, pairs_per_anchor=2, seed="train")
    assert all({p.a.key, p.b.key} <= set(split.heldout) for p in heldout)
    assert all({p.a.key, p.b.key} <= set(split.train) for p in train)
    hard = [p for p in heldout if p.label != PARAPHRASE and p.a.subject == p.b.subject]
    assert hard, "held-out pairs must include one-slot hard negatives"


def test_lexicon_entries_cover_every_word_without_leaking_a_combination() -> None:
    entries = lexicon_entries()
    for lexicon in CORPUS.values():
        for table in (lexicon.subjects, lexicon.places):
            for forms in table.values():
                assert set(forms.values()) <= set(entries)
    # An entry holding a subject and a place would show the tokenizer a (possibly held-out) key.
    for lang, lexicon in CORPUS.items():
        subject_forms = {f for forms in lexicon.subjects.values() for f in forms.values()}
        place_forms = {f for forms in lexicon.places.values() for f in forms.values()}
        for entry in lexicon_entries([lang]):
            assert not (
                any(f in entry for f in subject_forms) and any(f in entry for f in place_forms)
            ), (lang, entry)


def test_demo_tokenizer_is_reproducible_and_keeps_the_trained_segmentation() -> None:
    corpus_text = [s.text for s in sentences(split_keys(0).train)] + lexicon_entries()
    first = train_demo_tokenizer(corpus_text, 1000)
    assert train_demo_tokenizer(corpus_text, 1000).to_str() == first.to_str()
    ids = {t: first.token_to_id(t) for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")}
    assert ids == {
        "<s>": 0,
        "<pad>": 1,
        "</s>": 2,
        "<unk>": 3,
        "<mask>": first.get_vocab_size() - 1,
    }
    trained = train_xlmr_unigram_tokenizer(corpus_text, 1000)
    texts = [s.text for s in ALL_SENTENCES]
    for a, b in zip(texts, reversed(texts), strict=True):
        assert first.encode(a, b).tokens == trained.encode(a, b).tokens
