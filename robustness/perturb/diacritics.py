"""Diacritics: strip or add accents on Latin, Greek and Cyrillic letters; strip Arabic harakat.

Only the generic combining diacritics (U+0300 block and its supplements) on a Latin, Greek or
Cyrillic base are touched. Indic vowel signs, viramas and nuktas are letters of their words, not
decoration: removing them is a spelling change, so this module never does. Arabic harakat are
optional vowel marks, and dropping them is its own family because it is the normal way Arabic is
written, not an accent-stripping habit.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

from robustness.perturb._engine import edit_clusters
from robustness.rand import Draw, RandomSource
from robustness.registry import text_family
from robustness.scripts import cluster_script, script_of

_ACCENTED_SCRIPTS = frozenset({"Latin", "Greek", "Cyrillic"})
_GENERIC_MARK_RANGES = (
    (0x0300, 0x036F),
    (0x1AB0, 0x1AFF),
    (0x1DC0, 0x1DFF),
    (0x20D0, 0x20FF),
    (0xFE20, 0xFE2F),
)
# Letters whose stroke or dot is not a combining mark, written without it in plain-ASCII habits.
_STROKES = str.maketrans("đĐłŁøØıħĦ", "dDlLoOihH")
# Й is a letter of its own in Cyrillic alphabets, not и with an accent: И would be a misspelling
# nobody makes, whereas Ё -> Е is how most Russian text is written.
_KEEP = frozenset("йЙ")
_HARAKAT = frozenset(chr(c) for c in (*range(0x064B, 0x0660), 0x0670))


def _is_generic_mark(char: str) -> bool:
    return any(lo <= ord(char) <= hi for lo, hi in _GENERIC_MARK_RANGES)


def _strip(cluster: str) -> str:
    kept = "".join(c for c in unicodedata.normalize("NFD", cluster) if not _is_generic_mark(c))
    return unicodedata.normalize("NFC", kept).translate(_STROKES)


def _strippable(cluster: str) -> bool:
    return (
        cluster_script(cluster) in _ACCENTED_SCRIPTS
        and not _KEEP.intersection(unicodedata.normalize("NFC", cluster))
        and _strip(cluster) != unicodedata.normalize("NFC", cluster)
    )


@text_family(
    name="diacritic_removal",
    scripts=_ACCENTED_SCRIPTS,
    label_preserving=True,
    description=(
        "Strip accents from Latin/Greek/Cyrillic letters (é->e, ά->α, ё->е, đ->d, ł->l); keeps "
        "Cyrillic й and never touches Indic vowel signs or viramas."
    ),
    severity_meaning="fraction of accented letters stripped",
)
def diacritic_removal(text: str, rng: RandomSource, severity: float, lang: str | None) -> str:
    return edit_clusters(text, rng, severity, _strippable, lambda c, _d: _strip(c))


# Marks that, added to a bare letter, give a real precomposed letter of that script. Cyrillic is
# limited to the diaeresis because the breve would turn и into й, a different letter.
_ADDABLE_MARKS = {
    "Latin": "\u0301\u0300\u0302\u0308\u0303\u030c\u0327",
    "Greek": "\u0301\u0308",
    "Cyrillic": "\u0308",
}
# Cyrillic diaeresis letters outside Russian/Belarusian/Ukrainian orthography (ӓ, ӧ, ӱ, ...) are
# not what a Russian writer adds by accident.
_CYRILLIC_ADDITIONS = frozenset("ёЁїЇ")


@lru_cache(maxsize=4096)
def _additions(cluster: str) -> tuple[str, ...]:
    if len(cluster) != 1 or unicodedata.category(cluster)[0] != "L":
        return ()
    script = script_of(cluster)
    options = []
    for mark in _ADDABLE_MARKS.get(script, ""):
        composed = unicodedata.normalize("NFC", cluster + mark)
        if len(composed) == 1 and (script != "Cyrillic" or composed in _CYRILLIC_ADDITIONS):
            options.append(composed)
    return tuple(options)


@text_family(
    name="diacritic_addition",
    scripts=_ACCENTED_SCRIPTS,
    label_preserving=True,
    description=(
        "Add an accent to a bare Latin/Greek/Cyrillic letter where that gives a real precomposed "
        "letter (e->é, ο->ό, е->ё); never и->й."
    ),
    severity_meaning="fraction of accentable bare letters given an accent",
)
def diacritic_addition(text: str, rng: RandomSource, severity: float, lang: str | None) -> str:
    def add(cluster: str, draw: Draw) -> str | None:
        options = _additions(cluster)
        return draw.choice(options) if options else None

    return edit_clusters(text, rng, severity, lambda c: bool(_additions(c)), add)


def _strip_harakat(cluster: str) -> str:
    return "".join(c for c in cluster if c not in _HARAKAT)


@text_family(
    name="arabic_harakat_removal",
    scripts=frozenset({"Arabic"}),
    label_preserving=True,
    description="Drop optional Arabic vowel marks (fatha, damma, kasra, tanwin, shadda, sukun, ...).",
    severity_meaning="fraction of clusters carrying harakat that lose them",
)
def arabic_harakat_removal(text: str, rng: RandomSource, severity: float, lang: str | None) -> str:
    def carries_harakat(cluster: str) -> bool:
        # A cluster made only of harakat has no base to keep them on; leave such debris alone.
        return any(c in _HARAKAT for c in cluster) and bool(_strip_harakat(cluster))

    return edit_clusters(text, rng, severity, carries_harakat, lambda c, _d: _strip_harakat(c))
