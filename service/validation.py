"""Checks on request text that pydantic's types cannot express. Pure functions."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Lone surrogates, and the control characters (Unicode category Cc: U+0000-001F, U+007F-009F, a
# set Unicode keeps fixed) except tab, newline and carriage return, which are ordinary in pasted
# text. One compiled search scans a text in C, instead of a Python step per character.
_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


@dataclass(frozen=True)
class TextProblem:
    position: int
    codepoint: int
    reason: str

    def describe(self) -> str:
        return f"{self.reason} U+{self.codepoint:04X} at character {self.position}"


def find_text_problem(text: str) -> TextProblem | None:
    """The first character a model must not be fed: a lone surrogate or a control character."""
    found = _FORBIDDEN.search(text)
    if found is None:
        return None
    codepoint = ord(found.group())
    reason = "lone surrogate (invalid Unicode)" if codepoint >= 0xD800 else "control character"
    return TextProblem(found.start(), codepoint, reason)
