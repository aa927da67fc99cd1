"""Grapheme clusters, well-formedness checks and script-aware word segmentation.

Everything here works on extended grapheme clusters (`regex`'s `\\X`, UAX #29), never on `\\w`
splits: `\\w` drops combining marks, so Hindi, Tamil or Thai words fall apart into fragments and
edits made on those fragments leave vowel signs without a base.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Literal

import regex

from robustness.scripts import UNSPACED_SCRIPTS, cluster_script

_GRAPHEME = regex.compile(r"\X")
# Characters that attach to whatever precedes them: a text or piece starting with one of these
# either merges into its left neighbour or is left without a base.
_EXTENDER = regex.compile(r"[\p{M}\p{GCB=Extend}\p{GCB=SpacingMark}\p{GCB=ZWJ}]")
_ORPHAN = regex.compile(r"(?:^|(?<=[\s\p{Cc}]))[\p{M}\p{GCB=Extend}\p{GCB=SpacingMark}]")
# Viramas and invisible stackers join the next consonant into a conjunct even where UAX #29 keeps
# them in separate clusters (Tamil, Kannada, ...), so nothing may be put right after them.
_ENDS_WITH_LINKER = regex.compile(r"[\p{InSC=Virama}\p{InSC=Invisible_Stacker}\u200c\u200d]$")
# Characters that may sit inside a word between letters: apostrophes, hyphens, middle dots, gershayim.
WORD_CONNECTORS = frozenset("'\u2019-\u2010\u00b7\u05f3\u05f4")


def graphemes(text: str) -> list[str]:
    """The extended grapheme clusters of `text`, in order."""
    return _GRAPHEME.findall(text)


def starts_with_extender(piece: str) -> bool:
    """True when the first character of `piece` would attach to the character before it."""
    return bool(piece) and _EXTENDER.match(piece) is not None


def ends_with_linker(cluster: str) -> bool:
    """True when `cluster` ends in a virama, stacker, ZWJ or ZWNJ that binds the next letter."""
    return _ENDS_WITH_LINKER.search(cluster) is not None


def count_orphans(text: str) -> int:
    """Combining marks (or other extending characters) at the start or right after whitespace."""
    return len(_ORPHAN.findall(text))


def fits(prev_cluster: str, new: str, next_cluster: str) -> bool:
    """Whether `new` can sit between two untouched clusters without merging into either.

    The check re-segments the three pieces with the same UAX #29 rules that produced them, so it
    covers every joining rule (marks, conjuncts, Hangul jamo, emoji ZWJ sequences, flags) without
    listing them. `prev_cluster`/`next_cluster` are "" at the ends of the text.
    """
    if not prev_cluster and starts_with_extender(new or next_cluster):
        return False
    parts = graphemes(prev_cluster + new + next_cluster)
    if prev_cluster and (not parts or parts[0] != prev_cluster):
        return False
    return not next_cluster or (bool(parts) and parts[-1] == next_cluster)


def is_letter_cluster(cluster: str) -> bool:
    """A cluster whose base character is a letter (general category L*)."""
    return bool(cluster) and unicodedata.category(cluster[0])[0] == "L"


def is_word_cluster(cluster: str) -> bool:
    """A cluster whose base is a letter or a number: the material words are made of."""
    return bool(cluster) and unicodedata.category(cluster[0])[0] in "LN"


def is_space_cluster(cluster: str) -> bool:
    return cluster.isspace()


@dataclass(frozen=True)
class Token:
    """A piece of text: a word or the separator material (spaces, punctuation) between words."""

    text: str
    is_word: bool
    clusters: tuple[str, ...]


def tokenize(text: str, unspaced: Literal["grapheme", "run"] = "grapheme") -> list[Token]:
    """Split `text` into words and separators; joining the tokens' texts gives `text` back.

    Spaced scripts: a word is a maximal run of letter/number clusters, connectors such as the
    apostrophe in "don't" included when letters stand on both sides. Unspaced scripts (CJK, Thai,
    ...) have no word boundaries in the text: with `unspaced="grapheme"` each of their clusters is
    a word of its own (a fallback until a real segmenter is plugged in), with `unspaced="run"`
    their runs are words like any other.
    """
    clusters = graphemes(text)
    tokens: list[Token] = []
    current: list[str] = []
    current_is_word = False
    for i, cluster in enumerate(clusters):
        if unspaced == "grapheme" and _is_unspaced_word(cluster):
            if current:
                tokens.append(Token("".join(current), current_is_word, tuple(current)))
                current = []
            tokens.append(Token(cluster, True, (cluster,)))
            continue
        word_like = is_word_cluster(cluster) or _is_inner_connector(clusters, i, unspaced)
        if current and word_like != current_is_word:
            tokens.append(Token("".join(current), current_is_word, tuple(current)))
            current = []
        current_is_word = word_like
        current.append(cluster)
    if current:
        tokens.append(Token("".join(current), current_is_word, tuple(current)))
    return tokens


def _is_unspaced_word(cluster: str) -> bool:
    return is_word_cluster(cluster) and cluster_script(cluster) in UNSPACED_SCRIPTS


def _is_inner_connector(clusters: list[str], i: int, unspaced: str) -> bool:
    if clusters[i] not in WORD_CONNECTORS or not 0 < i < len(clusters) - 1:
        return False
    before, after = clusters[i - 1], clusters[i + 1]
    if unspaced == "grapheme" and (_is_unspaced_word(before) or _is_unspaced_word(after)):
        return False
    return is_word_cluster(before) and is_word_cluster(after)
