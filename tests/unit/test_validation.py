from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.validation import find_text_problem


@pytest.mark.parametrize(
    "text",
    [
        "Der Hund schläft.",
        "犬が寝ている。",
        "नमस्ते दुनिया",
        "line one\nline two\ttabbed\r\n",
        "क्‍ष with a zero-width joiner",
        "emoji family 👨‍👩‍👧",
        "RTL مرحبا",
    ],
)
def test_ordinary_multilingual_text_passes(text: str) -> None:
    assert find_text_problem(text) is None


@pytest.mark.parametrize(
    ("text", "position", "codepoint", "reason"),
    [
        ("ab\x00c", 2, 0x00, "control character"),
        ("\x1bescape", 0, 0x1B, "control character"),
        ("del\x7f", 3, 0x7F, "control character"),
        ("c1\x85", 2, 0x85, "control character"),
        ("x\ud800y", 1, 0xD800, "lone surrogate"),
        ("\udfff", 0, 0xDFFF, "lone surrogate"),
    ],
)
def test_first_problem_is_located(text: str, position: int, codepoint: int, reason: str) -> None:
    problem = find_text_problem(text)
    assert problem is not None
    assert (problem.position, problem.codepoint) == (position, codepoint)
    assert reason in problem.describe()
    assert f"U+{codepoint:04X}" in problem.describe()


def _first_problem_by_category(text: str) -> tuple[int, int] | None:
    """The definition, one character at a time: a surrogate, or Cc other than tab, LF, CR."""
    for position, char in enumerate(text):
        surrogate = 0xD800 <= ord(char) <= 0xDFFF
        if surrogate or (char not in "\t\n\r" and unicodedata.category(char) == "Cc"):
            return position, ord(char)
    return None


@settings(max_examples=400)
@given(st.text(alphabet=st.characters(codec=None, exclude_categories=())))
def test_the_compiled_search_matches_the_category_definition(text: str) -> None:
    problem = find_text_problem(text)
    found = None if problem is None else (problem.position, problem.codepoint)
    assert found == _first_problem_by_category(text)


def test_every_code_point_is_judged_as_its_category_says() -> None:
    for codepoint in range(0x110000):
        char = chr(codepoint)
        expected = _first_problem_by_category(char)
        problem = find_text_problem(char)
        assert (None if problem is None else (problem.position, problem.codepoint)) == expected
