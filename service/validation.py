"""Checks on request text that pydantic's types cannot express. Pure functions."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

# Tab, newline and carriage return are ordinary in pasted text; other controls are not.
_ALLOWED_CONTROLS = frozenset("\t\n\r")


@dataclass(frozen=True)
class TextProblem:
    position: int
    codepoint: int
    reason: str

    def describe(self) -> str:
        return f"{self.reason} U+{self.codepoint:04X} at character {self.position}"


def find_text_problem(text: str) -> TextProblem | None:
    """The first character a model must not be fed: a lone surrogate or a control character."""
    for position, char in enumerate(text):
        codepoint = ord(char)
        if 0xD800 <= codepoint <= 0xDFFF:
            return TextProblem(position, codepoint, "lone surrogate (invalid Unicode)")
        if char not in _ALLOWED_CONTROLS and unicodedata.category(char) == "Cc":
            return TextProblem(position, codepoint, "control character")
    return None
