"""Exact behaviour of each family on small inputs whose right answer is known."""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest
import regex

from robustness.apply import nfkc
from robustness.perturb.characters import char_delete, char_insert, char_substitute, char_swap
from robustness.perturb.diacritics import (
    arabic_harakat_removal,
    diacritic_addition,
    diacritic_removal,
)
from robustness.perturb.orthography import (
    case_change,
    punctuation_noise,
    space_typo,
    whitespace_noise,
)
from robustness.perturb.pairs import (
    pair_name_mismatch,
    pair_number_mismatch,
    pair_swap,
    pair_word_order,
)
from robustness.perturb.transliteration import romanisation, romanise
from robustness.perturb.unicode_noise import (
    CONFUSABLES,
    INVISIBLES,
    homoglyph,
    invisible_chars,
    width_shift,
)
from robustness.rand import edit_count
from robustness.segment import graphemes


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.mark.parametrize(
    ("severity", "units", "edits"),
    [
        (0.0, 10, 0),
        (1e-9, 10, 1),
        (0.1, 10, 1),
        (0.7, 10, 7),
        (0.71, 10, 8),
        (1.0, 10, 10),
        (0.5, 0, 0),
    ],
)
def test_edit_count_is_the_ceiling_of_severity_times_units(
    severity: float, units: int, edits: int
) -> None:
    assert edit_count(severity, units) == edits


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.5"])
def test_families_reject_severity_outside_the_unit_interval(bad: object) -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        char_delete("abc", rng(), bad, None)  # type: ignore[arg-type]


def test_char_delete_removes_whole_clusters() -> None:
    out = char_delete("हिन्दी", rng(), 0.5, "hi")
    assert out in {"हि", "न्दी"}


def test_char_delete_at_full_severity_keeps_only_non_letters() -> None:
    assert char_delete("ab, cd!", rng(), 1.0, None) == ", !"


def test_char_insert_copies_same_script_clusters_after_a_letter() -> None:
    out = char_insert("कि", rng(), 1.0, "hi")
    assert out == "किकि"  # the only Devanagari cluster in the text is doubled
    mixed = char_insert("ab गी", rng(3), 1.0, None)
    clusters = graphemes(mixed)
    assert clusters[clusters.index("गी") + 1] == "गी"  # Devanagari only copies Devanagari


def test_char_insert_never_inserts_after_a_virama() -> None:
    # Tamil க் and ஷ are two clusters (Tamil's virama does not link under UAX #29), but a letter
    # after க் would still fuse with it into a conjunct.
    assert char_insert("க்", rng(), 1.0, "ta") == "க்"


def test_char_substitute_uses_a_different_cluster_of_the_text() -> None:
    assert char_substitute("ab", rng(), 1.0, None) == "ba"
    assert char_substitute("aaa", rng(), 1.0, None) == "aaa"  # nothing else to use


def test_char_swap_swaps_adjacent_clusters_not_code_points() -> None:
    assert char_swap("कि", rng(), 1.0, "hi") == "कि"  # one cluster: nothing to swap
    assert char_swap("किम", rng(), 1.0, "hi") == "मकि"
    assert char_swap("한국", rng(), 1.0, "ko") == "국한"


def test_diacritic_removal_strips_latin_greek_cyrillic_accents() -> None:
    cases = {
        "Ça coûte déjà": "Ca coute deja",
        "Tiếng Việt đường": "Tieng Viet duong",
        "Ἀθῆναι Καλημέρα": "Αθηναι Καλημερα",
        "Ёлка": "Елка",
        "Łódź ø ı": "Lodz o i",
    }
    for text, stripped in cases.items():
        assert diacritic_removal(text, rng(), 1.0, None) == stripped


def test_diacritic_removal_keeps_cyrillic_short_i_and_indic_signs() -> None:
    assert diacritic_removal("йод", rng(), 1.0, "ru") == "йод"
    assert diacritic_removal("हिन्दी क़", rng(), 1.0, "hi") == "हिन्दी क़"
    assert diacritic_removal("مُحَمَّد", rng(), 1.0, "ar") == "مُحَمَّد"


def test_diacritic_removal_keeps_the_input_normalisation_form() -> None:
    decomposed = unicodedata.normalize("NFD", "café")
    assert diacritic_removal(decomposed, rng(), 1.0, None) == "cafe"


def test_diacritic_addition_gives_real_precomposed_letters() -> None:
    out = diacritic_addition("e", rng(), 1.0, "fr")
    assert len(out) == 1 and out != "e" and unicodedata.normalize("NFD", out)[0] == "e"
    assert diacritic_addition("е", rng(), 1.0, "ru") == "ё"  # Cyrillic: only the diaeresis
    assert diacritic_addition("и", rng(), 1.0, "ru") == "и"  # never и -> й
    assert diacritic_addition("ο", rng(), 1.0, "el") == "ό"  # no precomposed ο with dialytika


def test_arabic_harakat_removal() -> None:
    assert arabic_harakat_removal("مُحَمَّدٌ", rng(), 1.0, "ar") == "محمد"
    assert arabic_harakat_removal("محمد", rng(), 1.0, "ar") == "محمد"


def test_homoglyphs_look_the_same_but_change_code_points() -> None:
    out = homoglyph("pop ECHO", rng(), 1.0, "en")
    assert all(b in CONFUSABLES[a] for a, b in zip("popECHO", out.replace(" ", ""), strict=True))
    assert "LATIN" not in {unicodedata.name(c).split()[0] for c in out if c != " "}


def test_invisible_chars_go_between_letter_clusters_only() -> None:
    out = invisible_chars("हिन्दी", rng(), 1.0, "hi")
    assert out[: len("हि")] == "हि" and out[len("हि")] in INVISIBLES
    assert "".join(c for c in out if c not in INVISIBLES) == "हिन्दी"
    assert invisible_chars("क्ष", rng(), 1.0, "hi") == "क्ष"  # one cluster
    assert invisible_chars("க்ஷ", rng(), 1.0, "ta") == "க்ஷ"  # after a virama
    assert "\u200d" not in invisible_chars("مرحبا", rng(), 1.0, "ar")


def test_invisible_chars_never_break_arabic_joining() -> None:
    transparent = regex.compile(r"\p{Joining_Type=Transparent}")
    assert all(transparent.match(c) for c in INVISIBLES)


def test_width_shift_toggles_forms_that_nfkc_folds_back() -> None:
    assert width_shift("AB1", rng(), 1.0, None) == "ＡＢ１"
    assert width_shift("ＡＢ", rng(), 1.0, None) == "AB"
    assert width_shift("ガー。", rng(), 1.0, "ja") == "ｶﾞｰ｡"
    assert width_shift("ｶﾞｰ", rng(), 1.0, "ja") == "ガー"
    for text in ("Hello, world!", "ガー。", "東京 2024"):
        assert nfkc(width_shift(text, rng(), 1.0, None)) == nfkc(text)


def test_case_change_respects_turkish_and_greek_capitals() -> None:
    assert case_change("istanbul", rng(), 1.0, "tr") in {"İSTANBUL", "İstanbul"}
    assert case_change("ILIK", rng(), 1.0, "tr") in {"ılık", "Ilık"}
    assert case_change("Αθήνα", rng(), 1.0, "el") in {"αθήνα", "ΑΘΗΝΑ"}
    assert case_change("हिन्दी 東京", rng(), 1.0, "hi") == "हिन्दी 東京"


def test_whitespace_noise_changes_only_whitespace() -> None:
    text = "a b"
    out = whitespace_noise(text, rng(), 1.0, None)
    assert out.split() == ["a", "b"] and out != text
    assert out[0].isspace() and out[-1].isspace()


def test_whitespace_noise_adds_no_space_inside_cjk_or_thai() -> None:
    for text in ("我爱北京", "สวัสดีครับ"):
        out = whitespace_noise(text, rng(), 1.0, None)
        assert out.strip() == text


def test_space_typo_splits_at_cluster_boundaries_and_merges_words() -> None:
    assert space_typo("ab", rng(), 1.0, "en") == "a b"
    assert space_typo("a b", rng(), 1.0, "en") == "ab"
    split = space_typo("किताब", rng(), 1.0, "hi")
    assert split.split() == graphemes("किताब")  # never a space before a vowel sign
    assert space_typo("สวัสดีครับ", rng(), 1.0, "th") == "สวัสดีครับ"
    assert space_typo("我爱北京", rng(), 1.0, "zh") == "我爱北京"


def test_punctuation_noise_keeps_word_and_number_internal_marks() -> None:
    out = punctuation_noise("It's 3.5, ok!", rng(), 1.0, "en")
    assert out.startswith("It's 3.5")
    assert out.replace(",", "").replace("!", "") == "It's 3.5 ok"
    assert punctuation_noise("好。", rng(1), 1.0, "zh") in {"好", "好。。"}


@pytest.mark.parametrize(
    ("word", "roman"),
    [
        ("नमस्ते", "namaste"),
        ("हिन्दी", "hindi"),
        ("घर", "ghar"),
        ("क", "ka"),
        ("Москва", "Moskva"),
        ("안녕하세요", "annyeonghaseyo"),
        ("Αθήνα", "Athina"),
    ],
)
def test_romanise(word: str, roman: str) -> None:
    assert romanise(word) == roman


def test_romanisation_leaves_latin_and_han_alone() -> None:
    assert romanisation("Moscow Москва 東京", rng(), 1.0, "ru") == "Moscow Moskva 東京"


def test_pair_swap() -> None:
    assert pair_swap("a", "b", rng(), 0.5, None) == ("b", "a")
    assert pair_swap("a", "b", rng(), 0.0, None) == ("a", "b")


def test_pair_word_order_reorders_words_of_the_second_sentence_only() -> None:
    first, second = pair_word_order("Cats chase dogs.", "Dogs chase cats.", rng(), 1.0, "en")
    assert first == "Cats chase dogs."
    assert second != "Dogs chase cats." and sorted(second[:-1].split()) == ["Dogs", "cats", "chase"]
    assert second.endswith(".")


def test_pair_word_order_does_not_cross_sentences() -> None:
    _, second = pair_word_order("x", "One. Two", rng(), 1.0, "en")
    assert second == "One. Two"


def test_pair_number_mismatch_changes_a_shared_number_in_its_digit_system() -> None:
    first, second = pair_number_mismatch(
        "He had 25 cows.", "25 cows and 3 dogs.", rng(), 1e-9, "en"
    )
    assert first == "He had 25 cows."
    number = second.split()[0]
    assert second.endswith(" cows and 3 dogs.") and number != "25" and len(number) == 2
    assert number[0] != "0"
    _, devanagari = pair_number_mismatch("२५ गायें", "२५ गायें", rng(), 1.0, "hi")
    assert devanagari != "२५ गायें" and all("०" <= c <= "९" for c in devanagari.split()[0])


def test_pair_name_mismatch_replaces_shared_names_everywhere_in_the_second_sentence() -> None:
    first = "Yesterday John met Mary."
    second = "Then John saw Mary, and John left."
    out_first, out_second = pair_name_mismatch(first, second, rng(), 1.0, "en")
    assert out_first == first
    words = out_second.replace(",", "").replace(".", "").split()
    assert "John" not in words and "Mary" not in words
    assert words[1] == words[5]  # both Johns became the same name
    assert words[0] == "Then"  # sentence-initial capitals are not names


def test_pair_name_mismatch_keeps_possessive_endings() -> None:
    _, out = pair_name_mismatch("x", "I saw Anna's car.", rng(), 1.0, "en")
    assert out.startswith("I saw ") and out.endswith("'s car.") and "Anna" not in out
