"""Unicode scripts of characters and texts, and the scripts each language is written in.

Script membership comes from the `regex` module's Unicode tables (`\\p{Script=...}`), so it follows
the Unicode version `regex` ships rather than the older one in Python's `unicodedata`.
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache

import regex

COMMON = "Common"
INHERITED = "Inherited"
UNKNOWN = "Unknown"

# Frequent scripts first: the alternation below is tried left to right for every character.
_FREQUENT = [
    "Common",
    "Latin",
    "Inherited",
    "Cyrillic",
    "Greek",
    "Arabic",
    "Han",
    "Hiragana",
    "Katakana",
    "Hangul",
    "Devanagari",
    "Thai",
    "Hebrew",
    "Bengali",
    "Tamil",
    "Telugu",
    "Kannada",
    "Malayalam",
    "Gujarati",
    "Gurmukhi",
    "Oriya",
    "Sinhala",
    "Georgian",
    "Armenian",
    "Ethiopic",
    "Lao",
    "Khmer",
    "Myanmar",
    "Tibetan",
    "Bopomofo",
]
_REST = [
    "Adlam",
    "Ahom",
    "Anatolian_Hieroglyphs",
    "Avestan",
    "Balinese",
    "Bamum",
    "Bassa_Vah",
    "Batak",
    "Bhaiksuki",
    "Brahmi",
    "Braille",
    "Buginese",
    "Buhid",
    "Canadian_Aboriginal",
    "Carian",
    "Caucasian_Albanian",
    "Chakma",
    "Cham",
    "Cherokee",
    "Chorasmian",
    "Coptic",
    "Cuneiform",
    "Cypriot",
    "Cypro_Minoan",
    "Deseret",
    "Dives_Akuru",
    "Dogra",
    "Duployan",
    "Egyptian_Hieroglyphs",
    "Elbasan",
    "Elymaic",
    "Garay",
    "Glagolitic",
    "Gothic",
    "Grantha",
    "Gunjala_Gondi",
    "Gurung_Khema",
    "Hanifi_Rohingya",
    "Hanunoo",
    "Hatran",
    "Imperial_Aramaic",
    "Inscriptional_Pahlavi",
    "Inscriptional_Parthian",
    "Javanese",
    "Kaithi",
    "Kawi",
    "Kayah_Li",
    "Kharoshthi",
    "Khitan_Small_Script",
    "Khojki",
    "Khudawadi",
    "Kirat_Rai",
    "Lepcha",
    "Limbu",
    "Linear_A",
    "Linear_B",
    "Lisu",
    "Lycian",
    "Lydian",
    "Mahajani",
    "Makasar",
    "Mandaic",
    "Manichaean",
    "Marchen",
    "Masaram_Gondi",
    "Medefaidrin",
    "Meetei_Mayek",
    "Mende_Kikakui",
    "Meroitic_Cursive",
    "Meroitic_Hieroglyphs",
    "Miao",
    "Modi",
    "Mongolian",
    "Mro",
    "Multani",
    "Nabataean",
    "Nag_Mundari",
    "Nandinagari",
    "New_Tai_Lue",
    "Newa",
    "Nko",
    "Nushu",
    "Nyiakeng_Puachue_Hmong",
    "Ogham",
    "Ol_Chiki",
    "Ol_Onal",
    "Old_Hungarian",
    "Old_Italic",
    "Old_North_Arabian",
    "Old_Permic",
    "Old_Persian",
    "Old_Sogdian",
    "Old_South_Arabian",
    "Old_Turkic",
    "Old_Uyghur",
    "Osage",
    "Osmanya",
    "Pahawh_Hmong",
    "Palmyrene",
    "Pau_Cin_Hau",
    "Phags_Pa",
    "Phoenician",
    "Psalter_Pahlavi",
    "Rejang",
    "Runic",
    "Samaritan",
    "Saurashtra",
    "Sharada",
    "Shavian",
    "Siddham",
    "SignWriting",
    "Sogdian",
    "Sora_Sompeng",
    "Soyombo",
    "Sundanese",
    "Sunuwar",
    "Syloti_Nagri",
    "Syriac",
    "Tagalog",
    "Tagbanwa",
    "Tai_Le",
    "Tai_Tham",
    "Tai_Viet",
    "Takri",
    "Tangsa",
    "Tangut",
    "Thaana",
    "Tifinagh",
    "Tirhuta",
    "Todhri",
    "Toto",
    "Tulu_Tigalari",
    "Ugaritic",
    "Vai",
    "Vithkuqi",
    "Wancho",
    "Warang_Citi",
    "Yezidi",
    "Yi",
    "Zanabazar_Square",
]


def _compilable(name: str) -> bool:
    # An older `regex` may not know the newest scripts; those characters then read as Unknown.
    try:
        regex.compile(rf"\p{{Script={name}}}")
    except regex.error:
        return False
    return True


SCRIPT_NAMES: tuple[str, ...] = tuple(n for n in (*_FREQUENT, *_REST) if _compilable(n))
_SCRIPT_OF = regex.compile("|".join(rf"(?P<{n}>\p{{Script={n}}})" for n in SCRIPT_NAMES))

# Scripts written without spaces between words: word-level edits fall back to grapheme clusters
# there, and nothing may add spaces inside their runs.
UNSPACED_SCRIPTS: frozenset[str] = frozenset(
    [
        "Han",
        "Hiragana",
        "Katakana",
        "Bopomofo",
        "Thai",
        "Lao",
        "Khmer",
        "Myanmar",
        "Tibetan",
        "Tai_Tham",
        "Tai_Le",
        "New_Tai_Lue",
        "Javanese",
        "Balinese",
        "Yi",
    ]
)
# Brahmic abugidas: consonants carry an inherent vowel, and words are separated by spaces.
BRAHMIC_SCRIPTS: frozenset[str] = frozenset(
    [
        "Devanagari",
        "Bengali",
        "Gurmukhi",
        "Gujarati",
        "Oriya",
        "Tamil",
        "Telugu",
        "Kannada",
        "Malayalam",
        "Sinhala",
    ]
)
# Scripts that separate words with spaces, where a dropped or extra space is a typing slip.
SPACED_SCRIPTS: frozenset[str] = BRAHMIC_SCRIPTS | frozenset(
    [
        "Latin",
        "Cyrillic",
        "Greek",
        "Armenian",
        "Georgian",
        "Arabic",
        "Hebrew",
        "Syriac",
        "Thaana",
        "Ethiopic",
        "Hangul",
    ]
)

_LANG_SCRIPTS: dict[str, frozenset[str]] = {
    **dict.fromkeys(
        [
            "en",
            "de",
            "fr",
            "es",
            "it",
            "pt",
            "nl",
            "sv",
            "da",
            "no",
            "nb",
            "nn",
            "fi",
            "et",
            "lv",
            "lt",
            "pl",
            "cs",
            "sk",
            "sl",
            "hr",
            "bs",
            "ro",
            "hu",
            "tr",
            "az",
            "sq",
            "id",
            "ms",
            "tl",
            "vi",
            "sw",
            "yo",
            "ha",
            "ig",
            "zu",
            "xh",
            "af",
            "eu",
            "ca",
            "gl",
            "ga",
            "cy",
            "is",
            "mt",
            "uz",
            "tk",
            "so",
        ],
        frozenset({"Latin"}),
    ),
    **dict.fromkeys(
        ["ru", "bg", "uk", "be", "mk", "kk", "ky", "tg", "mn", "sr"], frozenset({"Cyrillic"})
    ),
    **dict.fromkeys(["ar", "fa", "ur", "ps", "sd", "ug", "ckb"], frozenset({"Arabic"})),
    **dict.fromkeys(["hi", "mr", "ne", "sa", "mai", "bho"], frozenset({"Devanagari"})),
    **dict.fromkeys(["bn", "as"], frozenset({"Bengali"})),
    "el": frozenset({"Greek"}),
    "he": frozenset({"Hebrew"}),
    "yi": frozenset({"Hebrew"}),
    "pa": frozenset({"Gurmukhi"}),
    "gu": frozenset({"Gujarati"}),
    "or": frozenset({"Oriya"}),
    "ta": frozenset({"Tamil"}),
    "te": frozenset({"Telugu"}),
    "kn": frozenset({"Kannada"}),
    "ml": frozenset({"Malayalam"}),
    "si": frozenset({"Sinhala"}),
    "th": frozenset({"Thai"}),
    "lo": frozenset({"Lao"}),
    "km": frozenset({"Khmer"}),
    "my": frozenset({"Myanmar"}),
    "bo": frozenset({"Tibetan"}),
    "ka": frozenset({"Georgian"}),
    "hy": frozenset({"Armenian"}),
    "am": frozenset({"Ethiopic"}),
    "ti": frozenset({"Ethiopic"}),
    "dv": frozenset({"Thaana"}),
    "zh": frozenset({"Han"}),
    "ja": frozenset({"Han", "Hiragana", "Katakana"}),
    "ko": frozenset({"Hangul"}),
}
# ISO 15924 codes that may follow the language in a tag such as sr-Latn or zh-Hant.
_SCRIPT_SUBTAGS = {
    "latn": "Latin",
    "cyrl": "Cyrillic",
    "grek": "Greek",
    "arab": "Arabic",
    "deva": "Devanagari",
    "hans": "Han",
    "hant": "Han",
    "hani": "Han",
    "hang": "Hangul",
    "kore": "Hangul",
    "hebr": "Hebrew",
    "thai": "Thai",
}


@lru_cache(maxsize=65536)
def script_of(char: str) -> str:
    """The Unicode Script property of one code point ("Unknown" for unassigned ones)."""
    if len(char) != 1:
        raise ValueError(f"script_of takes one code point, got {len(char)}: {char!r}")
    match = _SCRIPT_OF.match(char)
    return UNKNOWN if match is None or match.lastgroup is None else match.lastgroup


def cluster_script(cluster: str) -> str:
    """The script of a grapheme cluster: that of its first character with a specific script.

    Combining marks are Inherited and punctuation is Common, so a cluster takes the script of its
    base letter; a cluster with none is Common.
    """
    for char in cluster:
        script = script_of(char)
        if script not in (COMMON, INHERITED, UNKNOWN):
            return script
    return COMMON


def script_counts(text: str) -> Counter[str]:
    """How many code points of each specific script `text` holds (Common/Inherited left out)."""
    counts: Counter[str] = Counter()
    for char in text:
        script = script_of(char)
        if script not in (COMMON, INHERITED, UNKNOWN):
            counts[script] += 1
    return counts


def dominant_script(text: str) -> str:
    """The script with the most code points in `text`; "Common" when it has no specific script.

    Ties go to the script seen first, so the answer does not depend on dictionary order.
    """
    counts = script_counts(text)
    if not counts:
        return COMMON
    best = max(counts.values())
    return next(s for s in counts if counts[s] == best)


def scripts_for_lang(lang: str | None) -> frozenset[str] | None:
    """The scripts a language tag is normally written in (None when the tag is unknown).

    Understands BCP 47 style tags: "pt-BR" -> Latin, "sr-Latn" -> Latin, "zh_Hant" -> Han.
    """
    if not lang:
        return None
    parts = lang.replace("_", "-").lower().split("-")
    for subtag in parts[1:]:
        if subtag in _SCRIPT_SUBTAGS:
            return frozenset({_SCRIPT_SUBTAGS[subtag]})
    return _LANG_SCRIPTS.get(parts[0])


def primary_language(lang: str | None) -> str | None:
    """The primary language subtag, lower-cased: "de-AT" -> "de"."""
    if not lang:
        return None
    return lang.replace("_", "-").lower().split("-")[0]
