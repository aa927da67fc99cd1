"""Property tests: every family, on random Unicode and on real PAWS-X/XNLI sentences.

For every family and any input: the output is valid UTF-8 without lone surrogates, no combining
mark is orphaned, the same seed gives the same output (numpy Generator and random.Random),
severity 0 is the identity, and clusters outside the edited units come out as the same clusters.
"""

from __future__ import annotations

import itertools
import os
import random
import unicodedata
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robustness.apply import nfkc
from robustness.perturb.unicode_noise import CONFUSABLES, INVISIBLES
from robustness.registry import Family, all_families
from robustness.segment import tokenize
from tests.unit.robustness.conftest import RealPair
from tests.unit.robustness.invariants import (
    assert_no_new_joiners,
    assert_well_formed,
    changed_window,
    clusters,
    is_subsequence,
)

TEXT_FAMILIES = [f for f in all_families() if f.kind == "text"]
PAIR_FAMILIES = [f for f in all_families() if f.kind == "pair"]

# Characters that break naive text code: marks, conjuncts, viramas, Thai vowels, Hangul
# syllables and conjoining jamo, harakat, ZWJ/ZWNJ, emoji and flags, halfwidth kana, digits of
# several systems, prepended concatenation marks, controls, and case-mapping oddities.
TRICKY = list(
    "aeoyAEOU ñçéÉ\u0301\u0308\u0327 कखगनमरसहािीुेोौ्ंँ़ กขคสวัดีำเแ่้ 가각한국 \u1100\u1161\u11a8 "
    "مرحب\u064e\u0651\u0650 йёЁяЖ άΑλφ 👨\u200d👩🇫🇷🇺\u200c\ufe0f ｶﾞｰ。、 0123٤٥५ .,!?'- \t\n\r "
    "東京中 க்ஷ \u0600 ßİı ΣΟ"
)
texts = st.one_of(
    st.text(max_size=40), st.text(alphabet=st.sampled_from(TRICKY), min_size=1, max_size=40)
)
seeds = st.integers(min_value=0, max_value=2**32 - 1)
severities = st.one_of(st.sampled_from([0.0, 1e-9, 0.5, 1.0]), st.floats(0.0, 1.0))
langs = st.sampled_from(
    [None, "en", "de", "fr", "es", "ru", "bg", "el", "ar", "ur", "hi", "th", "ko", "ja", "zh", "tr"]
)
# Bounded so the suite stays fast; raise it for a bug hunt: POLYPROBE_HYPOTHESIS_EXAMPLES=5000.
MAX_EXAMPLES = int(os.environ.get("POLYPROBE_HYPOTHESIS_EXAMPLES", "60"))
FAST = settings(
    max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
REAL = settings(
    max_examples=max(1, MAX_EXAMPLES * 2 // 3),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _punctuation(cluster: str) -> bool:
    return len(cluster) == 1 and unicodedata.category(cluster)[0] == "P"


def _without(chars: tuple[str, ...], text: str) -> str:
    return "".join(c for c in text if c not in chars)


# What each family must leave alone at any severity (beyond the shared invariants).
RELATIONS: dict[str, Callable[[str, str], bool]] = {
    "char_delete": lambda a, b: is_subsequence(clusters(b), clusters(a)),
    "char_insert": lambda a, b: is_subsequence(clusters(a), clusters(b)),
    "char_swap": lambda a, b: sorted(clusters(a)) == sorted(clusters(b)),
    "invisible_chars": lambda a, b: (
        is_subsequence(clusters(a), clusters(b))
        and _without(INVISIBLES, a) == _without(INVISIBLES, b)
    ),
    "homoglyph": lambda a, b: (
        len(a) == len(b) and all(x == y or y in CONFUSABLES[x] for x, y in zip(a, b, strict=True))
    ),
    "width_shift": lambda a, b: nfkc(a) == nfkc(b),
    "diacritic_removal": lambda a, b: len(clusters(a)) == len(clusters(b)),
    "diacritic_addition": lambda a, b: len(clusters(a)) == len(clusters(b)),
    "arabic_harakat_removal": lambda a, b: len(clusters(a)) == len(clusters(b)),
    "whitespace_noise": lambda a, b: a.split() == b.split(),
    "space_typo": lambda a, b: a.replace(" ", "") == b.replace(" ", ""),
    "punctuation_noise": lambda a, b: (
        [c for c in clusters(a) if not _punctuation(c)]
        == [c for c in clusters(b) if not _punctuation(c)]
    ),
    "case_change": lambda a, b: len(a.split()) == len(b.split()),
    "romanisation": lambda a, b: all(c.isascii() or c in a for c in b),
    "keyboard_typo": lambda a, b: True,
    "char_substitute": lambda a, b: len(clusters(a)) == len(clusters(b)),
}
# Families that copy whole clusters of the text, which may legitimately contain a ZWJ.
COPIES_CLUSTERS = {"char_insert", "char_substitute"}


def _longest_word(text: str) -> int:
    return max((len(t.clusters) for t in tokenize(text, "run") if t.is_word), default=0)


def _longest_space_run(text: str) -> int:
    longest = run = 0
    for cluster in clusters(text):
        run = run + 1 if cluster.isspace() else 0
        longest = max(longest, run)
    return longest


# How many input clusters one edit may change: everything outside that window must be intact.
ONE_EDIT_WINDOW: dict[str, Callable[[str], int]] = {
    "char_insert": lambda _t: 0,
    "invisible_chars": lambda _t: 0,
    "char_swap": lambda _t: 2,
    "whitespace_noise": _longest_space_run,
    "case_change": _longest_word,
    "romanisation": _longest_word,
}


def test_every_text_family_has_its_relation_checked() -> None:
    assert {f.name for f in TEXT_FAMILIES} == set(RELATIONS)


def _check_text_family(
    family: Family, text: str, seed: int, severity: float, lang: str | None
) -> str:
    perturb = family.function
    out = perturb(text, np.random.default_rng(seed), severity, lang)
    assert_well_formed(text, out)
    assert RELATIONS[family.name](text, out), (text, out)
    if family.name not in COPIES_CLUSTERS:
        assert_no_new_joiners(text, out)
    assert perturb(text, np.random.default_rng(seed), severity, lang) == out
    with_random = perturb(text, random.Random(seed), severity, lang)
    assert_well_formed(text, with_random)
    assert perturb(text, random.Random(seed), severity, lang) == with_random
    assert perturb(text, np.random.default_rng(seed), 0.0, lang) == text
    return out


def _check_one_edit(family: Family, text: str, seed: int, lang: str | None) -> None:
    out = family.function(text, np.random.default_rng(seed), 1e-9, lang)
    before, _after = changed_window(text, out)
    allowed = ONE_EDIT_WINDOW.get(family.name, lambda _t: 1)(text)
    assert len(before) <= allowed, (text, out, before)


@pytest.mark.parametrize("family", TEXT_FAMILIES, ids=lambda f: f.name)
@FAST
@given(text=texts, seed=seeds, severity=severities, lang=langs)
def test_text_family_invariants_on_random_unicode(
    family: Family, text: str, seed: int, severity: float, lang: str | None
) -> None:
    _check_text_family(family, text, seed, severity, lang)
    _check_one_edit(family, text, seed, lang)


@pytest.mark.needs_shared_data
@pytest.mark.parametrize("family", TEXT_FAMILIES, ids=lambda f: f.name)
@REAL
@given(data=st.data(), seed=seeds, severity=severities)
def test_text_family_invariants_on_real_sentences(
    family: Family, real_pairs: list[RealPair], data: st.DataObject, seed: int, severity: float
) -> None:
    pair = data.draw(st.sampled_from(real_pairs), label="pair")
    for text in (pair.text, pair.text_pair):
        _check_text_family(family, text, seed, severity, pair.lang)
        _check_one_edit(family, text, seed, pair.lang)


def _check_pair_family(
    family: Family, text: str, text_pair: str, seed: int, severity: float, lang: str | None
) -> tuple[str, str]:
    perturb = family.function
    out = perturb(text, text_pair, np.random.default_rng(seed), severity, lang)
    assert isinstance(out, tuple) and len(out) == 2
    swapped = family.name == "pair_swap" and severity > 0
    sources = (text_pair, text) if swapped else (text, text_pair)
    for before, after in zip(sources, out, strict=True):
        assert_well_formed(before, after)
        assert_no_new_joiners(before, after)
    again = perturb(text, text_pair, np.random.default_rng(seed), severity, lang)
    assert again == out
    with_random = perturb(text, text_pair, random.Random(seed), severity, lang)
    assert with_random == perturb(text, text_pair, random.Random(seed), severity, lang)
    identity = perturb(text, text_pair, np.random.default_rng(seed), 0.0, lang)
    assert identity == (text, text_pair)
    if family.name == "pair_swap":
        assert out == ((text_pair, text) if severity > 0 else (text, text_pair))
    else:
        assert out[0] == text  # the first sentence is the anchor
    if family.name == "pair_word_order":
        assert sorted(clusters(out[1])) == sorted(clusters(text_pair))
    if family.name == "pair_number_mismatch":
        assert len(clusters(out[1])) == len(clusters(text_pair))
        changed = [
            (a, b) for a, b in zip(clusters(text_pair), clusters(out[1]), strict=True) if a != b
        ]
        assert all(unicodedata.category(a) == unicodedata.category(b) == "Nd" for a, b in changed)
    return out


@pytest.mark.parametrize("family", PAIR_FAMILIES, ids=lambda f: f.name)
@FAST
@given(text=texts, text_pair=texts, seed=seeds, severity=severities, lang=langs)
def test_pair_family_invariants_on_random_unicode(
    family: Family, text: str, text_pair: str, seed: int, severity: float, lang: str | None
) -> None:
    _check_pair_family(family, text, text_pair, seed, severity, lang)


@pytest.mark.needs_shared_data
@pytest.mark.parametrize("family", PAIR_FAMILIES, ids=lambda f: f.name)
@REAL
@given(data=st.data(), seed=seeds, severity=severities)
def test_pair_family_invariants_on_real_pairs(
    family: Family, real_pairs: list[RealPair], data: st.DataObject, seed: int, severity: float
) -> None:
    pair = data.draw(st.sampled_from(real_pairs), label="pair")
    _check_pair_family(family, pair.text, pair.text_pair, seed, severity, pair.lang)


def test_severity_sweeps_share_their_random_stream() -> None:
    # Severity is not part of the RNG key and edits are drawn in a fixed order, so deleting at a
    # higher severity deletes a superset of what a lower severity deleted.
    family = next(f for f in TEXT_FAMILIES if f.name == "char_delete")
    text = "Die Katze schläft auf der Fensterbank, हिन्दी भाषा"
    outputs = [
        family.function(text, np.random.default_rng(5), s, "de") for s in (0.1, 0.3, 0.6, 0.9)
    ]
    for lower, higher in itertools.pairwise(outputs):
        assert is_subsequence(clusters(higher), clusters(lower))


# Inputs where a careless edit merges clusters or strands a mark: flags split by a letter, a
# Hangul L jamo and V jamo split by a letter, a virama before a letter, marks after controls and
# spaces, emoji ZWJ sequences, halfwidth voiced kana, a prepended concatenation mark.
NASTY = [
    "🇫a🇷",
    "\u1100a\u1161",
    "क्aष",
    "\u0301abc",
    "\n\u0301x y",
    "a \u0301 b",
    "👨\u200d👩\u200d👧 zz",
    "ｶﾞｰ ガ",
    "க்ஷ மா",
    "\u0600a1 b",
    "ßİı Σ",
    "a\u200db कि\u200dत",
]


@pytest.mark.parametrize("family", TEXT_FAMILIES, ids=lambda f: f.name)
def test_text_families_on_nasty_inputs(family: Family) -> None:
    for text in NASTY:
        for seed in range(4):
            for severity in (1e-9, 0.5, 1.0):
                _check_text_family(family, text, seed, severity, None)
            _check_one_edit(family, text, seed, None)
