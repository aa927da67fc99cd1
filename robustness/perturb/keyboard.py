"""Keyboard typos: a key replaced by a neighbouring key on a real layout.

The layout follows the language when we have one for it (en QWERTY, de QWERTZ, fr AZERTY,
es Spanish, ru ЙЦУКЕН, el Greek, ar Arabic 101, hi/mr/ne InScript, th Kedmanee, ko 2-set) and
otherwise the script of each cluster, so English words inside a Hindi sentence get QWERTY typos
and the Devanagari around them InScript typos. A cluster is split into the code points that
were typed as separate keys (NFD: a base and its dead-key accents, a consonant and its vowel
sign); one of them is replaced by a neighbour of the same class. Hangul syllables are
decomposed arithmetically into jamo, one jamo is replaced by a 2-set neighbour that is valid in
its slot, and the syllable is recomposed.
"""

from __future__ import annotations

import unicodedata

from robustness.perturb._engine import edit_clusters
from robustness.perturb.layouts import (
    DEFAULT_LAYOUT_BY_SCRIPT,
    KOREAN_2SET,
    LAYOUTS_BY_LANG,
    Layout,
)
from robustness.rand import Draw, RandomSource
from robustness.registry import text_family
from robustness.scripts import cluster_script, primary_language

# Unicode Hangul syllable algorithm (The Unicode Standard, section 3.12).
_S_BASE, _L_COUNT, _V_COUNT, _T_COUNT = 0xAC00, 19, 21, 28
_S_COUNT = _L_COUNT * _V_COUNT * _T_COUNT
# The same jamo as Hangul Compatibility Jamo, which is what the 2-set keys type.
_LEADS = "ㄱㄲㄴㄷㄸㄹㅁㅂㅃㅅㅆㅇㅈㅉㅊㅋㅌㅍㅎ"
_VOWELS = "ㅏㅐㅑㅒㅓㅔㅕㅖㅗㅘㅙㅚㅛㅜㅝㅞㅟㅠㅡㅢㅣ"
_TAILS = ("", *"ㄱㄲㄳㄴㄵㄶㄷㄹㄺㄻㄼㄽㄾㄿㅀㅁㅂㅄㅅㅆㅇㅈㅊㅋㅌㅍㅎ")
_SLOTS = (_LEADS, _VOWELS, _TAILS)


def layout_for(script: str, lang: str | None) -> Layout | None:
    """The layout for clusters of `script` in text of language `lang` (None if we have none)."""
    by_lang = LAYOUTS_BY_LANG.get(primary_language(lang) or "")
    if by_lang is not None and by_lang.script == script:
        return by_lang
    return DEFAULT_LAYOUT_BY_SCRIPT.get(script)


def _is_syllable(cluster: str) -> bool:
    return len(cluster) == 1 and 0 <= ord(cluster) - _S_BASE < _S_COUNT


def _hangul_typo(syllable: str, layout: Layout, draw: Draw) -> str | None:
    index = ord(syllable) - _S_BASE
    jamo = [index // (_V_COUNT * _T_COUNT), index % (_V_COUNT * _T_COUNT) // _T_COUNT]
    jamo.append(index % _T_COUNT)
    # Per slot, the neighbours that are valid there: an initial must stay an initial consonant,
    # a vowel a vowel, a final a final (ㄸ, ㅃ, ㅉ cannot end a syllable). A compound vowel or
    # final is two keystrokes and is left alone.
    options = []
    for slot, index_in_slot in enumerate(jamo):
        if slot == 2 and index_in_slot == 0:
            continue
        table = _SLOTS[slot]
        near = [n for n in layout.neighbours.get(table[index_in_slot], ()) if n in table]
        if near:
            options.append((slot, near))
    if not options:
        return None
    slot, near = draw.choice(options)
    jamo[slot] = _SLOTS[slot].index(draw.choice(near))
    lead, vowel, tail = jamo
    return chr(_S_BASE + (lead * _V_COUNT + vowel) * _T_COUNT + tail)


def _key_options(cluster: str, layout: Layout) -> list[tuple[list[str], int]]:
    """Ways to see `cluster` as keystrokes: (code points, index of a key that has neighbours)."""
    lower = cluster.lower() if layout.cased else cluster
    if len(lower) == 1 and lower in layout.neighbours:
        return [([cluster], 0)]
    points = list(unicodedata.normalize("NFD", cluster))
    return [
        (points, i)
        for i, point in enumerate(points)
        if (point.lower() if layout.cased else point) in layout.neighbours
    ]


def _with_case_of(original: str, key: str) -> str | None:
    if not original.isupper():
        return key
    upper = key.upper()
    # Keys whose capital is two letters (ß -> SS) would change the length of the word.
    return upper if len(upper) == 1 else None


def _typo(cluster: str, layout: Layout, draw: Draw) -> str | None:
    if layout is KOREAN_2SET and _is_syllable(cluster):
        return _hangul_typo(cluster, layout, draw)
    options = _key_options(cluster, layout)
    if not options:
        return None
    points, i = draw.choice(options)
    key = points[i].lower() if layout.cased else points[i]
    replacement = _with_case_of(points[i], draw.choice(layout.neighbours[key]))
    if replacement is None:
        return None
    edited = "".join([*points[:i], replacement, *points[i + 1 :]])
    if not unicodedata.is_normalized("NFC", cluster):
        return edited
    # Keep the text's normalisation form: a precomposed é stays precomposed. When the new letter
    # has no precomposed form with the accent (α -> σ under a tonos), the dead key would have
    # typed nothing on it, so the letter comes out bare.
    composed = unicodedata.normalize("NFC", edited)
    if layout.cased and len(cluster) == 1 and len(composed) > 1:
        return replacement
    return composed


@text_family(
    name="keyboard_typo",
    scripts=frozenset(DEFAULT_LAYOUT_BY_SCRIPT),
    label_preserving=True,
    description=(
        "Replace one keystroke of a cluster with a neighbouring key on the language's layout "
        "(else the script's); Hangul at jamo level with the 2-set layout."
    ),
    severity_meaning="fraction of typeable clusters given a typo",
)
def keyboard_typo(text: str, rng: RandomSource, severity: float, lang: str | None) -> str:
    layouts: dict[str, Layout | None] = {}

    def layout_of(cluster: str) -> Layout | None:
        script = cluster_script(cluster)
        if script not in layouts:
            layouts[script] = layout_for(script, lang)
        return layouts[script]

    def eligible(cluster: str) -> bool:
        layout = layout_of(cluster)
        if layout is None:
            return False
        if layout is KOREAN_2SET and _is_syllable(cluster):
            return True
        return bool(_key_options(cluster, layout))

    def edit(cluster: str, draw: Draw) -> str | None:
        layout = layout_of(cluster)
        return None if layout is None else _typo(cluster, layout, draw)

    return edit_clusters(text, rng, severity, eligible, edit)
