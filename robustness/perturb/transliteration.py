"""Romanisation: non-Latin words rewritten in ASCII letters with `anyascii`.

Decision: registered as label-preserving. Romanised text (Hinglish, Arabizi, translit Russian,
Greeklish, Thai karaoke) is a real way people type these languages, and a reader of the language
recovers the meaning, so a change of prediction is a robustness failure, not a new label. The
romanisation is mechanical rather than the informal spelling people use, so results measure
robustness to script change more than to real romanised usage. Chinese and Japanese are left
out: anyascii reads kanji with Mandarin pinyin and drops tones, which no Japanese reader would
recognise and which is ambiguous for Chinese.

Brahmic scripts write the inherent vowel "a" implicitly after a consonant; anyascii transliterates
code point by code point and so drops it ("नमस्ते" -> "nmste"). We add it back after every
consonant that carries no vowel sign or virama, and drop it at the end of a word in the scripts
whose languages do so (Hindi "घर" is "ghar").
"""

from __future__ import annotations

import regex
from anyascii import anyascii

from robustness.perturb._engine import edit_words
from robustness.rand import RandomSource
from robustness.registry import text_family
from robustness.scripts import BRAHMIC_SCRIPTS, script_of
from robustness.segment import Token, graphemes

_FINAL_SCHWA_DROPPED = frozenset({"Devanagari", "Bengali", "Gurmukhi", "Gujarati"})
ROMANISABLE = frozenset(
    {"Cyrillic", "Greek", "Arabic", "Hebrew", "Armenian", "Georgian", "Ethiopic", "Thai", "Lao"}
    | {"Hangul"}
    | BRAHMIC_SCRIPTS
)
_CONSONANT = regex.compile(r"\p{InSC=Consonant}")
_NOBRAHMIC_SCRIPTSFTER = regex.compile(
    r"[\p{InSC=Vowel_Dependent}\p{InSC=Virama}\p{InSC=Pure_Killer}\p{InSC=Invisible_Stacker}]"
)
# anyascii writes a nukta as an apostrophe (क़ -> k'); the plain letter reads better.
_NUKTA = regex.compile(r"\p{InSC=Nukta}")


def romanise(word: str) -> str:
    """An ASCII rendering of `word`, with Brahmic inherent vowels and lower-case Hangul."""
    chars = [c for c in word if not _NUKTA.match(c)]
    out: list[str] = []
    final_inherent: str | None = None
    for i, char in enumerate(chars):
        script = script_of(char)
        piece = anyascii(char)
        out.append(piece.lower() if script == "Hangul" else piece)
        final_inherent = None
        implicit_vowel = (
            script in BRAHMIC_SCRIPTS
            and _CONSONANT.match(char) is not None
            and not (i + 1 < len(chars) and _NOBRAHMIC_SCRIPTSFTER.match(chars[i + 1]))
        )
        if implicit_vowel:
            out.append("a")
            final_inherent = script
    if final_inherent in _FINAL_SCHWA_DROPPED and len(graphemes(word)) > 1:
        out.pop()
    return "".join(out)


def _romanisable(token: Token) -> bool:
    return any(script_of(c) in ROMANISABLE for c in token.text)


@text_family(
    name="romanisation",
    scripts=ROMANISABLE,
    label_preserving=True,
    description=(
        "Rewrite words of non-Latin scripts in ASCII (anyascii, plus Brahmic inherent vowels); "
        "partial severity gives code-mixed text. Not for Chinese/Japanese."
    ),
    severity_meaning="fraction of non-Latin words romanised (1 = the whole text)",
)
def romanisation(text: str, rng: RandomSource, severity: float, lang: str | None) -> str:
    def edit(word: str, _draw: object) -> str | None:
        roman = romanise(word)
        return roman if roman.strip() else None

    return edit_words(text, rng, severity, _romanisable, edit)
