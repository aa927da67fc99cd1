"""Surface noise around words: letter case, whitespace, space typos and punctuation.

None of these adds a space inside a Thai or CJK word: those scripts have no spaces between
words, so a space there is a segmentation change, not noise. Word-level edits use the
script-aware tokenizer (runs of letter/number clusters), never `\\w`.
"""

from __future__ import annotations

import unicodedata

from robustness.perturb._engine import edit_pieces, edit_words
from robustness.rand import Draw, RandomSource, require_unit_severity
from robustness.registry import ANY_SCRIPT, text_family
from robustness.scripts import SPACED_SCRIPTS, cluster_script, primary_language
from robustness.segment import (
    Token,
    ends_with_linker,
    graphemes,
    is_letter_cluster,
    is_space_cluster,
    is_word_cluster,
)

_CASED_SCRIPTS = frozenset({"Latin", "Cyrillic", "Greek", "Armenian"})
_TURKIC = frozenset({"tr", "az"})
# Acute/tonos, grave/varia and circumflex/perispomeni.
_GREEK_CAPITAL_DROPS = dict.fromkeys(map(ord, "\u0301\u0300\u0342"))


def _upper(text: str, lang: str | None) -> str:
    if primary_language(lang) in _TURKIC:
        text = text.replace("i", "İ").replace("ı", "I")
    upper = text.upper()
    if any(cluster_script(c) == "Greek" for c in text):
        # Greek capitals are written without accents (ΑΘΗΝΑ, not ΑΘΉΝΑ); dialytika and
        # breathings stay.
        decomposed = unicodedata.normalize("NFD", upper).translate(_GREEK_CAPITAL_DROPS)
        upper = unicodedata.normalize("NFC", decomposed)
    return upper


def _lower(text: str, lang: str | None) -> str:
    if primary_language(lang) in _TURKIC:
        text = text.replace("I", "ı").replace("İ", "i")
    return text.lower()


def _case_variants(word: str, lang: str | None) -> list[str]:
    clusters = graphemes(word)
    title = _upper(clusters[0], lang) + _lower("".join(clusters[1:]), lang)
    variants = dict.fromkeys((_lower(word, lang), _upper(word, lang), title))
    return [v for v in variants if v != word]


@text_family(
    name="case_change",
    scripts=_CASED_SCRIPTS,
    label_preserving=True,
    description=(
        "Re-case whole words to lower, UPPER or Title case (Turkish dotted/dotless i and Greek "
        "unaccented capitals respected); words in caseless scripts are left alone."
    ),
    severity_meaning="fraction of cased words re-cased",
)
def case_change(text: str, rng: RandomSource, severity: float, lang: str | None) -> str:
    def eligible(token: Token) -> bool:
        return bool(_case_variants(token.text, lang))

    def recase(word: str, draw: Draw) -> str | None:
        variants = _case_variants(word, lang)
        return draw.choice(variants) if variants else None

    return edit_words(text, rng, severity, eligible, recase)


_SPACE_VARIANTS = ("  ", "\t", "\u00a0", "\n")
_EDGE_VARIANTS = (" ", "\n")


def _space_runs(text: str) -> list[str]:
    """Pieces of `text` where every whitespace-only run of clusters is one piece."""
    pieces: list[str] = []
    for cluster in graphemes(text):
        if pieces and is_space_cluster(cluster) and is_space_cluster(pieces[-1]):
            pieces[-1] += cluster
        else:
            pieces.append(cluster)
    return pieces


@text_family(
    name="whitespace_noise",
    scripts=ANY_SCRIPT,
    label_preserving=True,
    description=(
        "Replace existing whitespace with double spaces, tabs, no-break spaces or newlines, and "
        "pad the ends; never adds a space inside a word (so CJK/Thai words stay whole)."
    ),
    severity_meaning="fraction of whitespace runs (and the two text ends) changed",
)
def whitespace_noise(text: str, rng: RandomSource, severity: float, lang: str | None) -> str:
    require_unit_severity(severity)
    if severity == 0 or not text:
        return text
    # The empty pieces at both ends stand for "pad the start/end of the text".
    pieces = ["", *_space_runs(text), ""]
    inner = [i for i in range(1, len(pieces) - 1) if is_space_cluster(pieces[i])]
    candidates = [0, *inner, len(pieces) - 1]

    def vary(piece: str, draw: Draw) -> str | None:
        options = [v for v in (_SPACE_VARIANTS if piece else _EDGE_VARIANTS) if v != piece]
        return draw.choice(options)

    return edit_pieces(pieces, candidates, severity, Draw(rng), vary)


def _spaced_letter(cluster: str) -> bool:
    return is_letter_cluster(cluster) and cluster_script(cluster) in SPACED_SCRIPTS


@text_family(
    name="space_typo",
    scripts=SPACED_SCRIPTS,
    label_preserving=True,
    description=(
        "Typing slips with the space bar: drop a space between two words, or split a word "
        "between two letter clusters (never before a vowel sign or after a virama); scripts "
        "without spaces between words are left alone."
    ),
    severity_meaning="fraction of word gaps and intra-word cluster boundaries edited",
)
def space_typo(text: str, rng: RandomSource, severity: float, lang: str | None) -> str:
    require_unit_severity(severity)
    if severity == 0:
        return text
    clusters = graphemes(text)
    candidates = []
    for i in range(1, len(clusters) - 1):
        before, here, after = clusters[i - 1], clusters[i], clusters[i + 1]
        if here == " " and _spaced_letter(before) and _spaced_letter(after):
            candidates.append(i)  # a gap between words: merge them
        elif _spaced_letter(here) and _spaced_letter(after) and not ends_with_linker(here):
            candidates.append(i)  # inside a word: split it after this cluster
    if len(clusters) > 1 and _spaced_letter(clusters[0]) and _spaced_letter(clusters[1]):
        candidates.insert(0, 0)

    def slip(piece: str, _draw: Draw) -> str:
        return "" if piece == " " else piece + " "

    return edit_pieces(clusters, candidates, severity, Draw(rng), slip)


def _standalone_punctuation(clusters: list[str], i: int) -> bool:
    cluster = clusters[i]
    if len(cluster) != 1 or unicodedata.category(cluster)[0] != "P":
        return False
    # "don't", "e-mail", "3.5" and "1,000" keep their inner punctuation: it belongs to the word.
    inner = 0 < i < len(clusters) - 1
    return not (inner and is_word_cluster(clusters[i - 1]) and is_word_cluster(clusters[i + 1]))


@text_family(
    name="punctuation_noise",
    scripts=ANY_SCRIPT,
    label_preserving=True,
    description=(
        "Delete or double punctuation marks that stand between words (any script's: 。、।،؟); "
        "punctuation inside words and numbers is kept."
    ),
    severity_meaning="fraction of standalone punctuation marks deleted or doubled",
)
def punctuation_noise(text: str, rng: RandomSource, severity: float, lang: str | None) -> str:
    require_unit_severity(severity)
    if severity == 0:
        return text
    clusters = graphemes(text)
    candidates = [i for i in range(len(clusters)) if _standalone_punctuation(clusters, i)]

    def delete_or_double(mark: str, draw: Draw) -> str:
        return "" if draw.below(2) == 0 else mark + mark

    return edit_pieces(clusters, candidates, severity, Draw(rng), delete_or_double)
