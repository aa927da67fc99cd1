"""Character-level typos on grapheme clusters: insert, delete, substitute, swap adjacent.

The unit is a letter cluster (a base letter with all its marks, a Devanagari conjunct, a Hangul
syllable), so no edit can separate a vowel sign, virama or tone mark from its base. Insertions
and substitutions draw from the clusters of the same script already in the text: that keeps any
script well-formed without a per-script alphabet (we cannot enumerate valid Indic syllables).
"""

from __future__ import annotations

from robustness.perturb._engine import edit_clusters, left_of, right_of
from robustness.rand import Draw, RandomSource, edit_count, require_unit_severity
from robustness.registry import ANY_SCRIPT, text_family
from robustness.scripts import cluster_script
from robustness.segment import ends_with_linker, fits, graphemes, is_letter_cluster

_SEVERITY = "fraction of letter grapheme clusters edited"


def _same_script_pool(text: str) -> dict[str, list[str]]:
    """Distinct letter clusters of `text` per script, in first-seen order (deterministic)."""
    pool: dict[str, list[str]] = {}
    for cluster in dict.fromkeys(c for c in graphemes(text) if is_letter_cluster(c)):
        pool.setdefault(cluster_script(cluster), []).append(cluster)
    return pool


@text_family(
    name="char_delete",
    scripts=ANY_SCRIPT,
    label_preserving=True,
    description="Delete whole letter grapheme clusters (a letter with its marks, a conjunct).",
    severity_meaning=_SEVERITY,
)
def char_delete(text: str, rng: RandomSource, severity: float, lang: str | None) -> str:
    return edit_clusters(text, rng, severity, is_letter_cluster, lambda _c, _d: "")


@text_family(
    name="char_insert",
    scripts=ANY_SCRIPT,
    label_preserving=True,
    description=(
        "After a letter cluster, insert a copy of a same-script letter cluster from the text "
        "(doubling included); never after a virama or joiner, where it would form a conjunct."
    ),
    severity_meaning=_SEVERITY,
)
def char_insert(text: str, rng: RandomSource, severity: float, lang: str | None) -> str:
    pool = _same_script_pool(text)

    def insert_after(cluster: str, draw: Draw) -> str | None:
        if ends_with_linker(cluster):
            return None
        extra = draw.choice(pool[cluster_script(cluster)])
        # The cluster we insert after must stay exactly what it was.
        return cluster + extra if fits(cluster, extra, "") else None

    return edit_clusters(text, rng, severity, is_letter_cluster, insert_after)


@text_family(
    name="char_substitute",
    scripts=ANY_SCRIPT,
    label_preserving=True,
    description="Replace a letter cluster with a different same-script letter cluster from the text.",
    severity_meaning=_SEVERITY,
)
def char_substitute(text: str, rng: RandomSource, severity: float, lang: str | None) -> str:
    pool = _same_script_pool(text)

    def substitute(cluster: str, draw: Draw) -> str | None:
        others = [c for c in pool[cluster_script(cluster)] if c != cluster]
        return draw.choice(others) if others else None

    return edit_clusters(text, rng, severity, is_letter_cluster, substitute)


@text_family(
    name="char_swap",
    scripts=ANY_SCRIPT,
    label_preserving=True,
    description="Swap two adjacent, different letter clusters; swaps never overlap.",
    severity_meaning="fraction of adjacent letter-cluster pairs swapped",
)
def char_swap(text: str, rng: RandomSource, severity: float, lang: str | None) -> str:
    require_unit_severity(severity)
    if severity == 0:
        return text
    clusters = graphemes(text)
    pairs = [
        i
        for i in range(len(clusters) - 1)
        if is_letter_cluster(clusters[i])
        and is_letter_cluster(clusters[i + 1])
        and clusters[i] != clusters[i + 1]
    ]
    budget = edit_count(severity, len(pairs))
    draw = Draw(rng)
    out = list(clusters)
    used: set[int] = set()
    for pos in draw.permutation(len(pairs)) if budget else ():
        if len(used) == 2 * budget:
            break
        i = pairs[pos]
        if i in used or i + 1 in used:
            continue
        a, b = out[i], out[i + 1]
        # The swapped pair must stay two clusters and not merge with either neighbour.
        if fits(b, a, "") and fits(left_of(out, i), b + a, right_of(out, i + 1)):
            out[i], out[i + 1] = b, a
            used.update((i, i + 1))
    return "".join(out)
