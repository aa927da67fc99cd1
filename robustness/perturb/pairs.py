"""Sentence-pair families: `(text, text_pair, rng, severity, lang) -> (text, text_pair)`.

Only the swap is an invariance test, and only for symmetric tasks (paraphrase): in NLI the
premise and hypothesis are not interchangeable. The others edit the second sentence so that it
no longer says what the first says, so they are directional: PAWS-X was built from word
swaps, and a changed number or name turns a paraphrase into a non-paraphrase and an entailment
into a contradiction or neutral pair. The first sentence stays as the anchor.
"""

from __future__ import annotations

import itertools
import unicodedata
from dataclasses import dataclass

from robustness.perturb._engine import left_of, right_of
from robustness.rand import Draw, RandomSource, edit_count, require_unit_severity
from robustness.registry import ANY_SCRIPT, pair_family
from robustness.scripts import SPACED_SCRIPTS, cluster_script
from robustness.segment import WORD_CONNECTORS, Token, fits, graphemes, tokenize

_SENTENCE_END = frozenset(".!?。！？।॥؟።")


@pair_family(
    name="pair_swap",
    scripts=ANY_SCRIPT,
    label_preserving=True,
    symmetric_task_only=True,
    description="Swap the two sentences; an invariance test for symmetric tasks (PAWS-X) only.",
    severity_meaning="any severity above 0 swaps",
)
def pair_swap(
    text: str, text_pair: str, rng: RandomSource, severity: float, lang: str | None
) -> tuple[str, str]:
    require_unit_severity(severity)
    return (text, text_pair) if severity == 0 else (text_pair, text)


def _orderable(token: Token) -> bool:
    # Han characters are close enough to morphemes for a local reorder to mean something; kana,
    # Thai and other unspaced syllables are not, so without a real segmenter they are left alone.
    script = cluster_script(token.clusters[0])
    return token.is_word and (script in SPACED_SCRIPTS or script == "Han")


@pair_family(
    name="pair_word_order",
    scripts=SPACED_SCRIPTS | {"Han"},
    label_preserving=False,
    description=(
        "Swap adjacent words of the second sentence, within a sentence (Chinese: adjacent "
        "characters); directional because word order carries meaning (PAWS-X)."
    ),
    severity_meaning="fraction of adjacent word pairs swapped (swaps never overlap)",
)
def pair_word_order(
    text: str, text_pair: str, rng: RandomSource, severity: float, lang: str | None
) -> tuple[str, str]:
    require_unit_severity(severity)
    if severity == 0:
        return text, text_pair
    tokens = tokenize(text_pair, unspaced="grapheme")
    words = [i for i, t in enumerate(tokens) if _orderable(t)]
    pairs = [
        (i, j)
        for i, j in itertools.pairwise(words)
        if tokens[i].text != tokens[j].text
        and not any(c in _SENTENCE_END for t in tokens[i + 1 : j] for c in t.text)
    ]
    budget = edit_count(severity, len(pairs))
    out = [t.text for t in tokens]
    draw = Draw(rng)
    used: set[int] = set()
    for pos in draw.permutation(len(pairs)) if budget else ():
        if len(used) == 2 * budget:
            break
        i, j = pairs[pos]
        if i in used or j in used:
            continue
        out[i], out[j] = out[j], out[i]
        if fits(left_of(out, i), out[i], right_of(out, i)) and fits(
            left_of(out, j), out[j], right_of(out, j)
        ):
            used.update((i, j))
        else:
            out[i], out[j] = out[j], out[i]
    return text, "".join(out)


@dataclass(frozen=True)
class _Number:
    start: int  # cluster index of the first digit
    end: int  # one past the last digit
    value: str  # digit values and separators, the same for 42, ٤٢ and ４２


def _is_digit(cluster: str) -> bool:
    return len(cluster) == 1 and unicodedata.category(cluster) == "Nd"


def _numbers(clusters: list[str]) -> list[_Number]:
    """Runs of decimal digits (any script), with . , ٫ ٬ between digits kept inside."""
    found: list[_Number] = []
    i = 0
    while i < len(clusters):
        if not _is_digit(clusters[i]):
            i += 1
            continue
        j = i + 1
        while j < len(clusters) and (
            _is_digit(clusters[j])
            or (
                clusters[j] in ".,\u066b\u066c"
                and j + 1 < len(clusters)
                and _is_digit(clusters[j + 1])
            )
        ):
            j += 1
        value = "".join(str(unicodedata.decimal(c)) if _is_digit(c) else "." for c in clusters[i:j])
        found.append(_Number(i, j, value))
        i = j
    return found


def _change_one_digit(clusters: list[str], number: _Number, draw: Draw) -> None:
    positions = [k for k in range(number.start, number.end) if _is_digit(clusters[k])]
    k = draw.choice(positions)
    digit = clusters[k]
    zero = ord(digit) - unicodedata.decimal(digit)
    # A leading digit of a multi-digit number stays non-zero so "250" cannot become "050".
    lowest = 1 if k == positions[0] and len(positions) > 1 else 0
    choices = [v for v in range(lowest, 10) if v != unicodedata.decimal(digit)]
    clusters[k] = chr(zero + draw.choice(choices))


@pair_family(
    name="pair_number_mismatch",
    scripts=ANY_SCRIPT,
    label_preserving=False,
    description=(
        "Change a digit of numbers in the second sentence, preferring numbers that both "
        "sentences share; same digit system (Devanagari, Arabic-Indic, Thai, fullwidth ...)."
    ),
    severity_meaning="fraction of candidate numbers changed",
)
def pair_number_mismatch(
    text: str, text_pair: str, rng: RandomSource, severity: float, lang: str | None
) -> tuple[str, str]:
    require_unit_severity(severity)
    if severity == 0:
        return text, text_pair
    clusters = graphemes(text_pair)
    numbers = _numbers(clusters)
    shared = {n.value for n in _numbers(graphemes(text))}
    candidates = [n for n in numbers if n.value in shared] or numbers
    draw = Draw(rng)
    for pos in draw.permutation(len(candidates))[: edit_count(severity, len(candidates))]:
        _change_one_digit(clusters, candidates[pos], draw)
    return text, "".join(clusters)


NAMES: dict[str, tuple[str, ...]] = {
    "Latin": (
        "Maria",
        "John",
        "Ahmed",
        "Olga",
        "Pedro",
        "Fatima",
        "Hans",
        "Amara",
        "Lukas",
        "Sofia",
        "Kwame",
        "Ingrid",
        "Mateo",
        "Priya",
        "Tomasz",
        "Yuki",
    ),
    "Cyrillic": ("Иван", "Мария", "Ольга", "Пётр", "Анна", "Сергей", "Елена", "Дмитрий"),
    "Greek": ("Νίκος", "Μαρία", "Γιώργος", "Ελένη", "Δημήτρης", "Σοφία", "Κώστας", "Άννα"),
}


def _name_head(word: str) -> str:
    """The name part of a word token: "Smith's" -> "Smith"."""
    for i, char in enumerate(word):
        if char in WORD_CONNECTORS:
            return word[:i]
    return word


def _capitalised_names(tokens: list[Token]) -> list[int]:
    """Indices of capitalised words that do not open a sentence (a cheap stand-in for NER)."""
    found = []
    sentence_start = True
    for i, token in enumerate(tokens):
        if not token.is_word:
            if any(c in _SENTENCE_END for c in token.text):
                sentence_start = True
            continue
        head = _name_head(token.text)
        capitalised = len(head) > 1 and head[0].isupper() and cluster_script(head) in NAMES
        if capitalised and not sentence_start:
            found.append(i)
        sentence_start = False
    return found


@pair_family(
    name="pair_name_mismatch",
    scripts=frozenset(NAMES),
    label_preserving=False,
    description=(
        "Replace a capitalised, non-sentence-initial word of the second sentence (preferring ones "
        "the first sentence shares) with a different first name of the same script."
    ),
    severity_meaning="fraction of candidate names replaced (every occurrence of each)",
)
def pair_name_mismatch(
    text: str, text_pair: str, rng: RandomSource, severity: float, lang: str | None
) -> tuple[str, str]:
    require_unit_severity(severity)
    if severity == 0:
        return text, text_pair
    tokens = tokenize(text_pair, unspaced="run")
    first_words = {_name_head(t.text) for t in tokenize(text, unspaced="run") if t.is_word}
    found = _capitalised_names(tokens)
    names = list(dict.fromkeys(_name_head(tokens[i].text) for i in found))
    candidates = [n for n in names if n in first_words] or names
    in_use = first_words | {_name_head(t.text) for t in tokens}
    out = [t.text for t in tokens]
    draw = Draw(rng)
    for pos in draw.permutation(len(candidates))[: edit_count(severity, len(candidates))]:
        old = candidates[pos]
        choices = [n for n in NAMES[cluster_script(old)] if n not in in_use]
        if not choices:
            continue
        new = draw.choice(choices)
        in_use.add(new)
        for i in found:
            if _name_head(out[i]) == old:
                out[i] = new + out[i][len(old) :]
    return text, "".join(out)
