from __future__ import annotations

import pytest

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
