"""Keyboard layouts (public facts: which character each key types) and their key neighbours.

Rows are listed top to bottom: the number row, then the three letter rows. Columns are aligned
so that the first letter key of each letter row ("q", "a", "z" on US QWERTY) is column 0; the
number row's "1" is column 0 too, and a key left of it gets column -1. On a staggered keyboard
the key at (row, col) touches (row, col +- 1), (row - 1, col) and (row - 1, col + 1) above, and
(row + 1, col - 1) and (row + 1, col) below. A space stands for a key that types no single
character we use (dead keys, the Arabic lam-alef ligature key).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

from robustness.segment import starts_with_extender

Row = tuple[int, str]  # (column of the first key, the keys)


@dataclass(frozen=True)
class Layout:
    name: str
    script: str
    # layer 0 is unshifted; layer 1, when given, is what Shift types on the same keys (for
    # layouts where Shift does not simply change case).
    layers: tuple[tuple[Row, ...], ...]
    # Whether hitting the same key with or without Shift by mistake counts as a typo (InScript
    # क/ख, Korean ㄱ/ㄲ); for cased layouts Shift is case and stays with the letter instead.
    shift_slips: bool = False
    cased: bool = False
    neighbours: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "neighbours", _neighbour_map(self))


def _key_class(char: str) -> str | None:
    """'mark' for characters that attach to a base, 'letter' for letters, None for the rest.

    A typo only swaps a key for a neighbour of the same class: a consonant hit in place of a
    vowel sign would leave the sign without a base.
    """
    if starts_with_extender(char):
        return "mark"
    if unicodedata.category(char)[0] == "L":
        return "letter"
    return None


def _positions(rows: tuple[Row, ...]) -> dict[tuple[int, int], str]:
    return {
        (r, start + c): key
        for r, (start, keys) in enumerate(rows)
        for c, key in enumerate(keys)
        if key != " "
    }


_ADJACENT = ((0, -1), (0, 1), (-1, 0), (-1, 1), (1, -1), (1, 0))


def _neighbour_map(layout: Layout) -> dict[str, tuple[str, ...]]:
    layers = [_positions(rows) for rows in layout.layers]
    found: dict[str, dict[str, None]] = {}
    for li, positions in enumerate(layers):
        for (r, c), key in positions.items():
            near = [positions.get((r + dr, c + dc)) for dr, dc in _ADJACENT]
            if layout.shift_slips:
                near += [other.get((r, c)) for lj, other in enumerate(layers) if lj != li]
            slot = found.setdefault(key, {})
            for n in near:
                if n is not None and n != key and _key_class(n) == _key_class(key) is not None:
                    slot[n] = None
    return {key: tuple(near) for key, near in found.items() if near}


US_QWERTY = Layout(
    "us-qwerty",
    "Latin",
    (((0, "1234567890-="), (0, "qwertyuiop[]"), (0, "asdfghjkl;'"), (0, "zxcvbnm,./")),),
    cased=True,
)
DE_QWERTZ = Layout(
    "de-qwertz",
    "Latin",
    (((0, "1234567890ß"), (0, "qwertzuiopü+"), (0, "asdfghjklöä#"), (0, "yxcvbnm,.-")),),
    cased=True,
)
FR_AZERTY = Layout(
    "fr-azerty",
    "Latin",
    (((0, "&é\"'(-è_çà)="), (0, "azertyuiop $"), (0, "qsdfghjklmù*"), (0, "wxcvbn,;:!")),),
    cased=True,
)
ES_QWERTY = Layout(
    "es-qwerty",
    "Latin",
    (((0, "1234567890'¡"), (0, "qwertyuiop +"), (0, "asdfghjklñ ç"), (0, "zxcvbnm,.-")),),
    cased=True,
)
RU_JCUKEN = Layout(
    "ru-jcuken",
    "Cyrillic",
    (((-1, "ё1234567890-="), (0, "йцукенгшщзхъ"), (0, "фывапролджэ"), (0, "ячсмитьбю.")),),
    cased=True,
)
GREEK = Layout(
    "el-greek",
    "Greek",
    (((0, "1234567890-="), (0, ";ςερτυθιοπ[]"), (0, "ασδφγηξκλ '"), (0, "ζχψωβνμ,./")),),
    cased=True,
)
ARABIC_101 = Layout(
    "ar-101",
    "Arabic",
    (((-1, "ذ1234567890-="), (0, "ضصثقفغعهخحجد"), (0, "شسيبلاتنمكط"), (0, "ئءؤر ىةوزظ")),),
)
HINDI_INSCRIPT = Layout(
    "hi-inscript",
    "Devanagari",
    (
        (
            (-1, "\u094a1234567890-\u0943"),
            (0, "\u094c\u0948\u093e\u0940\u0942बहगदजड\u093c"),
            (0, "\u094b\u0947\u094d\u093f\u0941परकतचट"),
            (0, "\u0946\u0902मनवलस,.य"),
        ),
        (
            (-1, "\u0912"),
            (0, "औऐआईऊभङघधझढञ"),
            (0, "ओएअइउफ\u0931खथछठ"),
            (0, "\u090e\u0901णऩऴळशष।\u095f"),
        ),
    ),
    shift_slips=True,
)
THAI_KEDMANEE = Layout(
    "th-kedmanee",
    "Thai",
    (
        (
            (-1, "_ๅ/-ภถ\u0e38\u0e36คตจขช"),
            (0, "ๆไำพะ\u0e31\u0e35รนยบลฃ"),
            (0, "ฟหกดเ\u0e49\u0e48าสวง"),
            (0, "ผปแอ\u0e34\u0e37ทมใฝ"),
        ),
    ),
)
# 2-set (Dubeolsik): consonants on the left, vowels on the right; Shift types the tense
# consonants and the two extra vowels. Only the letter rows are listed (row 0 = the top one).
KOREAN_2SET = Layout(
    "ko-2set",
    "Hangul",
    (
        ((0, "ㅂㅈㄷㄱㅅㅛㅕㅑㅐㅔ"), (0, "ㅁㄴㅇㄹㅎㅗㅓㅏㅣ"), (0, "ㅋㅌㅊㅍㅠㅜㅡ")),
        ((0, "ㅃㅉㄸㄲㅆㅛㅕㅑㅒㅖ"), (0, "ㅁㄴㅇㄹㅎㅗㅓㅏㅣ"), (0, "ㅋㅌㅊㅍㅠㅜㅡ")),
    ),
    shift_slips=True,
)

LAYOUTS_BY_LANG: dict[str, Layout] = {
    "en": US_QWERTY,
    "de": DE_QWERTZ,
    "fr": FR_AZERTY,
    "es": ES_QWERTY,
    "ru": RU_JCUKEN,
    "el": GREEK,
    "ar": ARABIC_101,
    "hi": HINDI_INSCRIPT,
    "mr": HINDI_INSCRIPT,
    "ne": HINDI_INSCRIPT,
    "th": THAI_KEDMANEE,
    "ko": KOREAN_2SET,
}
DEFAULT_LAYOUT_BY_SCRIPT: dict[str, Layout] = {
    layout.script: layout
    for layout in (
        US_QWERTY,
        RU_JCUKEN,
        GREEK,
        ARABIC_101,
        HINDI_INSCRIPT,
        THAI_KEDMANEE,
        KOREAN_2SET,
    )
}
