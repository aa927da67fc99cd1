"""The shared loop of in-place families: pick units in a seeded order, edit, keep what fits.

Units are grapheme clusters or word tokens ("pieces"). The random order is drawn before any
edit, and edits then consume the stream in that order, so a higher severity on the same RNG
stream makes the same first edits plus more (common random numbers across a severity sweep).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from robustness.rand import Draw, RandomSource, edit_count, require_unit_severity
from robustness.segment import Token, fits, graphemes, tokenize

PieceEdit = Callable[[str, Draw], str | None]


def first_cluster(piece: str) -> str:
    clusters = graphemes(piece)
    return clusters[0] if clusters else ""


def last_cluster(piece: str) -> str:
    clusters = graphemes(piece)
    return clusters[-1] if clusters else ""


def left_of(pieces: list[str], i: int) -> str:
    """The last cluster of the nearest non-empty piece before position i ("" at the start)."""
    for j in range(i - 1, -1, -1):
        if pieces[j]:
            return last_cluster(pieces[j])
    return ""


def right_of(pieces: list[str], i: int) -> str:
    """The first cluster of the nearest non-empty piece after position i ("" at the end)."""
    for j in range(i + 1, len(pieces)):
        if pieces[j]:
            return first_cluster(pieces[j])
    return ""


def edit_pieces(
    pieces: list[str], candidates: list[int], severity: float, draw: Draw, edit: PieceEdit
) -> str:
    """Edit ceil(severity * len(candidates)) of the candidate pieces and join the result.

    An edit that returns None, changes nothing, or would merge with an untouched neighbour is
    skipped and the next candidate in the random order is tried, so untouched clusters always
    come out as the same clusters.
    """
    budget = edit_count(severity, len(candidates))
    out = list(pieces)
    done = 0
    for pos in draw.permutation(len(candidates)) if budget else ():
        if done == budget:
            break
        i = candidates[pos]
        new = edit(out[i], draw)
        if new is None or new == out[i] or not fits(left_of(out, i), new, right_of(out, i)):
            continue
        out[i] = new
        done += 1
    return "".join(out)


def edit_clusters(
    text: str,
    rng: RandomSource,
    severity: float,
    eligible: Callable[[str], bool],
    edit: PieceEdit,
) -> str:
    """Apply `edit` to a severity-scaled share of the grapheme clusters that are `eligible`."""
    require_unit_severity(severity)
    if severity == 0:
        return text
    clusters = graphemes(text)
    candidates = [i for i, cluster in enumerate(clusters) if eligible(cluster)]
    return edit_pieces(clusters, candidates, severity, Draw(rng), edit)


def edit_words(
    text: str,
    rng: RandomSource,
    severity: float,
    eligible: Callable[[Token], bool],
    edit: PieceEdit,
    unspaced: Literal["grapheme", "run"] = "run",
) -> str:
    """Apply `edit` to a severity-scaled share of the word tokens that are `eligible`."""
    require_unit_severity(severity)
    if severity == 0:
        return text
    tokens = tokenize(text, unspaced)
    candidates = [i for i, token in enumerate(tokens) if token.is_word and eligible(token)]
    return edit_pieces([t.text for t in tokens], candidates, severity, Draw(rng), edit)
