"""Unicode-level noise that a reader does not see: homoglyphs, invisible characters, widths.

These are the perturbations a tokenizer's normaliser is most likely to undo (NFKC folds
fullwidth forms back to ASCII), so they are the main customers of `is_noop`.
"""

from __future__ import annotations

import unicodedata

from robustness.perturb._engine import edit_clusters, edit_pieces
from robustness.rand import Draw, RandomSource, require_unit_severity
from robustness.registry import ANY_SCRIPT, text_family
from robustness.segment import (
    ends_with_linker,
    graphemes,
    is_letter_cluster,
    starts_with_extender,
)

# Latin / Cyrillic / Greek letters that render identically in common fonts. Written as escapes
# because the point of the table is that the characters look the same.
_CONFUSABLE_GROUPS = (
    "a\u0430",
    "c\u0441",
    "e\u0435",
    "\u00eb\u0451",
    "i\u0456",
    "\u00ef\u0457",
    "j\u0458",
    "o\u043e\u03bf",
    "p\u0440\u03c1",
    "s\u0455",
    "x\u0445",
    "y\u0443",
    "h\u04bb",
    "d\u0501",
    "q\u051b",
    "w\u051d",
    "v\u03bd",
    "A\u0410\u0391",
    "B\u0412\u0392",
    "C\u0421\u03f9",
    "E\u0415\u0395",
    "\u00cb\u0401",
    "H\u041d\u0397",
    "I\u0406\u0399",
    "\u00cf\u0407\u03aa",
    "J\u0408",
    "K\u041a\u039a",
    "M\u041c\u039c",
    "N\u039d",
    "O\u041e\u039f",
    "P\u0420\u03a1",
    "S\u0405",
    "T\u0422\u03a4",
    "X\u0425\u03a7",
    "Y\u04ae\u03a5",
    "Z\u0396",
)
CONFUSABLES: dict[str, tuple[str, ...]] = {
    char: tuple(other for other in group if other != char)
    for group in _CONFUSABLE_GROUPS
    for char in group
}


@text_family(
    name="homoglyph",
    scripts=frozenset({"Latin", "Cyrillic", "Greek"}),
    label_preserving=True,
    description="Swap letters for look-alikes from another script (Latin a -> Cyrillic а, Greek ο).",
    severity_meaning="fraction of letters that have a look-alike replaced",
)
def homoglyph(text: str, rng: RandomSource, severity: float, lang: str | None) -> str:
    return edit_clusters(
        text, rng, severity, lambda c: c in CONFUSABLES, lambda c, d: d.choice(CONFUSABLES[c])
    )


# ZWSP, WORD JOINER and SOFT HYPHEN. ZWJ and ZWNJ are deliberately absent: in Indic, Persian and
# Arabic text they select conjunct and joining forms, so inserting them changes the text. All
# three are Joining_Type=Transparent in Unicode's Arabic shaping data, so they do not break
# cursive joining either (a unit test checks that property).
INVISIBLES = ("\u200b", "\u2060", "\u00ad")


@text_family(
    name="invisible_chars",
    scripts=ANY_SCRIPT,
    label_preserving=True,
    description=(
        "Insert ZWSP, WORD JOINER or SOFT HYPHEN between two letter clusters; never inside a "
        "cluster, never after a virama, never ZWJ/ZWNJ."
    ),
    severity_meaning="fraction of letter-letter cluster boundaries given an invisible character",
)
def invisible_chars(text: str, rng: RandomSource, severity: float, lang: str | None) -> str:
    require_unit_severity(severity)
    if severity == 0:
        return text
    clusters = graphemes(text)
    candidates = [
        i
        for i in range(len(clusters) - 1)
        if is_letter_cluster(clusters[i])
        and is_letter_cluster(clusters[i + 1])
        and not ends_with_linker(clusters[i])
    ]
    return edit_pieces(
        clusters, candidates, severity, Draw(rng), lambda c, d: c + d.choice(INVISIBLES)
    )


_HALFWIDTH_SOUND_MARKS = {"\u3099": "\uff9e", "\u309a": "\uff9f"}


def _width_tables() -> tuple[dict[str, str], dict[str, str]]:
    """Narrow -> wide and wide -> narrow forms, derived from Unicode's own NFKC mappings."""
    to_wide = {chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)}
    half_of: dict[str, str] = {}
    for code in range(0xFF61, 0xFFA0):
        narrow = chr(code)
        wide = unicodedata.normalize("NFKC", narrow)
        # The halfwidth sound marks fold to combining marks; alone they are debris, not text.
        if len(wide) == 1 and not starts_with_extender(wide):
            half_of[wide] = narrow
            to_wide[narrow] = wide
    # Voiced kana have no halfwidth letter of their own: ガ is written ｶﾞ (letter + sound mark).
    for code in range(0x30A1, 0x30FB):
        kana = chr(code)
        decomposed = unicodedata.normalize("NFD", kana)
        sound = _HALFWIDTH_SOUND_MARKS.get(decomposed[1:])
        if decomposed[0] in half_of and sound is not None:
            narrow = half_of[decomposed[0]] + sound
            if unicodedata.normalize("NFKC", narrow) == kana:
                to_wide[narrow] = kana
    return to_wide, {wide: narrow for narrow, wide in to_wide.items()}


TO_WIDE, TO_NARROW = _width_tables()


@text_family(
    name="width_shift",
    scripts=ANY_SCRIPT,
    label_preserving=True,
    description=(
        "Toggle character width: ASCII <-> fullwidth forms, katakana <-> halfwidth katakana, "
        "CJK punctuation <-> halfwidth (all undone by NFKC)."
    ),
    severity_meaning="fraction of width-convertible clusters converted",
)
def width_shift(text: str, rng: RandomSource, severity: float, lang: str | None) -> str:
    def toggle(cluster: str, _draw: Draw) -> str | None:
        return TO_WIDE.get(cluster) or TO_NARROW.get(cluster)

    return edit_clusters(text, rng, severity, lambda c: c in TO_WIDE or c in TO_NARROW, toggle)
