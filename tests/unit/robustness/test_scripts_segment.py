"""Script detection, language tags, grapheme clusters and script-aware word segmentation."""

from __future__ import annotations

import pytest

from robustness.registry import dominant_script
from robustness.scripts import (
    SCRIPT_NAMES,
    cluster_script,
    primary_language,
    script_counts,
    script_of,
    scripts_for_lang,
)
from robustness.segment import (
    count_orphans,
    ends_with_linker,
    fits,
    graphemes,
    starts_with_extender,
    tokenize,
)


@pytest.mark.parametrize(
    ("text", "script"),
    [
        ("The cat", "Latin"),
        ("Кошка спит", "Cyrillic"),
        ("Η γάτα", "Greek"),
        ("القطة نائمة", "Arabic"),
        ("बिल्ली सो रही है", "Devanagari"),
        ("แมวนอน", "Thai"),
        ("고양이가 잔다", "Hangul"),
        ("猫が寝ている", "Hiragana"),
        ("猫在睡觉", "Han"),
        ("பூனை", "Tamil"),
        ("בית", "Hebrew"),
        ("123 !?", "Common"),
        ("", "Common"),
    ],
)
def test_dominant_script(text: str, script: str) -> None:
    assert dominant_script(text) == script


def test_dominant_script_counts_letters_not_marks_or_punctuation() -> None:
    # Combining marks are Inherited and the comma Common: only the base letters count.
    assert script_counts("é, ё") == {"Latin": 1, "Cyrillic": 1}
    # A tie goes to the script seen first.
    assert dominant_script("ab вг") == "Latin"
    assert dominant_script("вг ab") == "Cyrillic"


def test_script_of_single_code_points() -> None:
    assert script_of("a") == "Latin"
    assert script_of("\u0301") == "Inherited"
    assert script_of("।") == "Common"  # the danda is shared by several Indic scripts
    assert script_of("\U000e0000") == "Unknown"  # unassigned
    with pytest.raises(ValueError, match="one code point"):
        script_of("ab")


def test_the_script_table_knows_the_scripts_of_the_evaluation_languages() -> None:
    for name in ("Latin", "Cyrillic", "Greek", "Arabic", "Devanagari", "Thai", "Han", "Hangul"):
        assert name in SCRIPT_NAMES


def test_cluster_script_takes_the_base_letter() -> None:
    assert cluster_script("कि") == "Devanagari"
    assert cluster_script("e\u0301") == "Latin"
    assert cluster_script("!") == "Common"


@pytest.mark.parametrize(
    ("tag", "scripts"),
    [
        ("en", {"Latin"}),
        ("pt-BR", {"Latin"}),
        ("sr-Latn", {"Latin"}),
        ("sr", {"Cyrillic"}),
        ("zh_Hant", {"Han"}),
        ("ja", {"Han", "Hiragana", "Katakana"}),
        ("hi", {"Devanagari"}),
        ("ur", {"Arabic"}),
        ("xx", None),
        (None, None),
    ],
)
def test_scripts_for_lang(tag: str | None, scripts: set[str] | None) -> None:
    assert scripts_for_lang(tag) == (None if scripts is None else frozenset(scripts))


def test_primary_language() -> None:
    assert primary_language("de_AT") == "de"
    assert primary_language(None) is None


def test_graphemes_keep_marks_conjuncts_syllables_and_emoji_whole() -> None:
    assert graphemes("क्षत्रिय") == ["क्ष", "त्रि", "य"]
    assert graphemes("สวัสดี") == ["ส", "วั", "ส", "ดี"]
    assert graphemes("e\u0301a") == ["e\u0301", "a"]
    assert graphemes("\u1100\u1161\u11a8") == ["\u1100\u1161\u11a8"]  # conjoining jamo
    family = "👨\u200d👩\u200d👧"
    assert graphemes(family + "🇫🇷") == [family, "🇫🇷"]


def test_extenders_linkers_and_orphans() -> None:
    assert starts_with_extender("\u0301x")
    assert starts_with_extender("\u093fक")  # a vowel sign
    assert starts_with_extender("\u0e33")  # Thai SARA AM is a spacing mark
    assert not starts_with_extender("a")
    assert not starts_with_extender("")
    assert ends_with_linker("क्")
    assert ends_with_linker("க்")
    assert not ends_with_linker("क")
    assert count_orphans("\u0301a b \u0301c") == 2
    assert count_orphans("हिन्दी") == 0


def test_fits_rejects_pieces_that_would_merge_with_their_neighbours() -> None:
    assert fits("a", "b", "c")
    assert fits("", "", "a")
    assert not fits("a", "\u0301", "")  # would join the a
    assert not fits("", "\u0301b", "")  # would be orphaned at the start
    assert not fits(" ", "\u0301b", "")  # would join the space
    assert not fits("क्", "ष", "")  # would form the conjunct क्ष
    assert not fits("🇫", "", "🇷")  # deleting between two regional indicators makes a flag
    assert not fits("", "\u1100", "\u1161")  # a leading jamo would join the vowel


def test_tokenize_round_trips_and_keeps_marks_in_words() -> None:
    text = "Don't stop, हिन्दी भाषा! 3.5"
    tokens = tokenize(text)
    assert "".join(t.text for t in tokens) == text
    assert [t.text for t in tokens if t.is_word] == ["Don't", "stop", "हिन्दी", "भाषा", "3", "5"]


def test_tokenize_falls_back_to_graphemes_for_unspaced_scripts() -> None:
    words = [t.text for t in tokenize("我爱北京。OK") if t.is_word]
    assert words == ["我", "爱", "北", "京", "OK"]
    runs = [t.text for t in tokenize("我爱北京。OK", unspaced="run") if t.is_word]
    assert runs == ["我爱北京", "OK"]
    thai = [t.text for t in tokenize("สวัสดี ครับ") if t.is_word]
    assert thai == ["ส", "วั", "ส", "ดี", "ค", "รั", "บ"]
