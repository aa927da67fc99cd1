"""Keyboard layouts, their neighbours, layout choice, and jamo-level Hangul typos."""

from __future__ import annotations

import numpy as np
import pytest

from robustness.perturb.keyboard import keyboard_typo, layout_for
from robustness.perturb.layouts import (
    ARABIC_101,
    DE_QWERTZ,
    FR_AZERTY,
    GREEK,
    HINDI_INSCRIPT,
    KOREAN_2SET,
    RU_JCUKEN,
    THAI_KEDMANEE,
    US_QWERTY,
)
from robustness.segment import graphemes, starts_with_extender


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.mark.parametrize(
    ("layout", "key", "neighbours"),
    [
        (US_QWERTY, "a", {"q", "w", "s", "z"}),
        (US_QWERTY, "g", {"t", "y", "f", "h", "v", "b"}),
        (US_QWERTY, "p", {"o", "l"}),  # punctuation keys are not letters
        (DE_QWERTZ, "z", {"t", "u", "g", "h"}),
        (DE_QWERTZ, "y", {"a", "s", "x"}),
        (FR_AZERTY, "a", {"é", "z", "q"}),
        (RU_JCUKEN, "ф", {"й", "ц", "ы", "я"}),
        (GREEK, "α", {"ς", "σ", "ζ"}),
        (ARABIC_101, "ش", {"ض", "ص", "س", "ئ"}),
        (THAI_KEDMANEE, "ก", {"ห", "ด", "พ", "ป", "แ"}),
    ],
)
def test_neighbours(layout: object, key: str, neighbours: set[str]) -> None:
    assert set(layout.neighbours[key]) == neighbours  # type: ignore[attr-defined]


def test_inscript_neighbours_stay_in_their_class() -> None:
    # क (k) sits between त and र on the home row; Shift on the same key types ख.
    assert set(HINDI_INSCRIPT.neighbours["क"]) == {"र", "त", "ग", "द", "स", "ख"}
    # A vowel sign is only ever replaced by another combining sign, never a consonant.
    for sign in HINDI_INSCRIPT.neighbours["\u093f"]:
        assert starts_with_extender(sign)


def test_korean_shift_slips_reach_tense_consonants() -> None:
    assert "ㄲ" in KOREAN_2SET.neighbours["ㄱ"]
    assert "ㅃ" in KOREAN_2SET.neighbours["ㅂ"]


def test_layout_choice_follows_language_then_script() -> None:
    assert layout_for("Latin", "de") is DE_QWERTZ
    assert layout_for("Latin", "fr-CA") is FR_AZERTY
    assert layout_for("Latin", "hi") is US_QWERTY  # English words in Hindi text
    assert layout_for("Devanagari", "hi") is HINDI_INSCRIPT
    assert layout_for("Cyrillic", "bg") is RU_JCUKEN
    assert layout_for("Han", "zh") is None


def test_typo_replaces_one_key_by_a_neighbour_and_keeps_case() -> None:
    assert keyboard_typo("a", rng(), 1.0, "en") in {"q", "w", "s", "z"}
    assert keyboard_typo("A", rng(), 1.0, "en") in {"Q", "W", "S", "Z"}
    assert keyboard_typo("y", rng(), 1.0, "de") in {"a", "s", "x"}


def test_accented_letters_keep_their_accent_where_a_precomposed_letter_exists() -> None:
    # ό is typed as tonos + ο. Hitting ι instead gives ί; on a consonant the dead key types nothing.
    seen = {keyboard_typo("ό", rng(seed), 1.0, "el") for seed in range(40)}
    assert "ί" in seen
    assert seen <= {"ί", "π", "κ", "λ"}


def test_devanagari_typos_keep_vowel_signs_attached() -> None:
    for seed in range(30):
        out = keyboard_typo("किताब", rng(seed), 1.0, "hi")
        assert not starts_with_extender(out)
        for cluster in graphemes(out):
            assert not starts_with_extender(cluster)


_L_COUNT, _V_COUNT, _T_COUNT = 19, 21, 28


def _jamo(syllable: str) -> tuple[int, int, int]:
    index = ord(syllable) - 0xAC00
    return (
        index // (_V_COUNT * _T_COUNT),
        index % (_V_COUNT * _T_COUNT) // _T_COUNT,
        index % _T_COUNT,
    )


@pytest.mark.parametrize("syllable", ["각", "밥"])
def test_hangul_typos_change_exactly_one_jamo_and_stay_one_syllable(syllable: str) -> None:
    # 밥 ends in ㅂ, whose Shift slip ㅃ cannot end a syllable: the final must stay a final.
    for seed in range(40):
        out = keyboard_typo(syllable, rng(seed), 1.0, "ko")
        assert len(out) == 1 and 0xAC00 <= ord(out) <= 0xD7A3
        changed = [a != b for a, b in zip(_jamo(syllable), _jamo(out), strict=True)]
        assert sum(changed) == 1
        assert _jamo(out)[2] != 0


def test_hangul_compound_vowels_are_left_alone() -> None:
    # 와 = ㅇ + ㅘ: the compound vowel is two keystrokes, so only the initial can change.
    for seed in range(20):
        out = keyboard_typo("와", rng(seed), 1.0, "ko")
        assert _jamo(out)[1:] == _jamo("와")[1:]


def test_scripts_without_a_layout_are_untouched() -> None:
    assert keyboard_typo("東京", rng(), 1.0, "ja") == "東京"
