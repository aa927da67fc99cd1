"""A small compositional parallel corpus, written for this project, in eleven languages.

Every sentence says one thing: "<subject> is <place>". The pair (subject, place) is the sentence's
meaning key, shared by all languages, so paraphrase pairs (same key) and hard negatives (one slot
changed) can be generated within a language and across languages without any translation step.

Each language has its own lexicon and two templates written for its grammar: the forms a template
needs (definite/indefinite noun, Korean topic/subject particles chosen by the final consonant,
Chinese measure words, Thai classifiers, German dative, Russian prepositional case) are spelled out
per word instead of being derived by rules, so every sentence is grammatical by construction.
The two templates of a language say the same thing with different wording or word order, which
gives same-language paraphrases that are not string-identical.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

SUBJECTS: tuple[str, ...] = (
    "cat",
    "dog",
    "bird",
    "horse",
    "rabbit",
    "teacher",
    "doctor",
    "child",
    "duck",
    "student",
)
PLACES: tuple[str, ...] = (
    "garden",
    "kitchen",
    "roof",
    "beach",
    "library",
    "school",
    "market",
    "forest",
    "bridge",
    "hospital",
)

MeaningKey = tuple[str, str]
"""(subject, place): what a sentence means, independent of language and template."""

Forms = Mapping[str, str]
"""Inflected or particle-bearing forms of one word, by form name (e.g. "def", "indef")."""


@dataclass(frozen=True)
class LanguageLexicon:
    """One language's words and templates.

    Templates are `str.format` strings over `s` (the subject's forms) and `p` (the place's forms),
    e.g. "{s[def]} is {p[at]}."; the first character of the result is upper-cased, which is a
    no-op for scripts without case.
    """

    subjects: Mapping[str, Forms]
    places: Mapping[str, Forms]
    templates: tuple[str, ...]


CORPUS: Mapping[str, LanguageLexicon] = {
    "en": LanguageLexicon(
        subjects={
            "cat": {"def": "the cat", "indef": "a cat"},
            "dog": {"def": "the dog", "indef": "a dog"},
            "bird": {"def": "the bird", "indef": "a bird"},
            "horse": {"def": "the horse", "indef": "a horse"},
            "rabbit": {"def": "the rabbit", "indef": "a rabbit"},
            "teacher": {"def": "the teacher", "indef": "a teacher"},
            "doctor": {"def": "the doctor", "indef": "a doctor"},
            "child": {"def": "the child", "indef": "a child"},
            "duck": {"def": "the duck", "indef": "a duck"},
            "student": {"def": "the student", "indef": "a student"},
        },
        places={
            "garden": {"at": "in the garden"},
            "kitchen": {"at": "in the kitchen"},
            "roof": {"at": "on the roof"},
            "beach": {"at": "on the beach"},
            "library": {"at": "in the library"},
            "school": {"at": "at the school"},
            "market": {"at": "at the market"},
            "forest": {"at": "in the forest"},
            "bridge": {"at": "on the bridge"},
            "hospital": {"at": "in the hospital"},
        },
        templates=("{s[def]} is {p[at]}.", "There is {s[indef]} {p[at]}."),
    ),
    "de": LanguageLexicon(
        subjects={
            "cat": {"def": "die Katze", "indef": "eine Katze"},
            "dog": {"def": "der Hund", "indef": "ein Hund"},
            "bird": {"def": "der Vogel", "indef": "ein Vogel"},
            "horse": {"def": "das Pferd", "indef": "ein Pferd"},
            "rabbit": {"def": "das Kaninchen", "indef": "ein Kaninchen"},
            "teacher": {"def": "der Lehrer", "indef": "ein Lehrer"},
            "doctor": {"def": "der Arzt", "indef": "ein Arzt"},
            "child": {"def": "das Kind", "indef": "ein Kind"},
            "duck": {"def": "die Ente", "indef": "eine Ente"},
            "student": {"def": "der Student", "indef": "ein Student"},
        },
        # Dative after the two-way prepositions, since the sentences give a location.
        places={
            "garden": {"at": "im Garten"},
            "kitchen": {"at": "in der Küche"},
            "roof": {"at": "auf dem Dach"},
            "beach": {"at": "am Strand"},
            "library": {"at": "in der Bibliothek"},
            "school": {"at": "in der Schule"},
            "market": {"at": "auf dem Markt"},
            "forest": {"at": "im Wald"},
            "bridge": {"at": "auf der Brücke"},
            "hospital": {"at": "im Krankenhaus"},
        },
        # The second template fronts the place; German keeps the verb second.
        templates=("{s[def]} ist {p[at]}.", "{p[at]} ist {s[indef]}."),
    ),
    "es": LanguageLexicon(
        subjects={
            "cat": {"def": "el gato", "indef": "un gato"},
            "dog": {"def": "el perro", "indef": "un perro"},
            "bird": {"def": "el pájaro", "indef": "un pájaro"},
            "horse": {"def": "el caballo", "indef": "un caballo"},
            "rabbit": {"def": "el conejo", "indef": "un conejo"},
            "teacher": {"def": "el maestro", "indef": "un maestro"},
            "doctor": {"def": "el médico", "indef": "un médico"},
            "child": {"def": "el niño", "indef": "un niño"},
            "duck": {"def": "el pato", "indef": "un pato"},
            "student": {"def": "el estudiante", "indef": "un estudiante"},
        },
        places={
            "garden": {"at": "en el jardín"},
            "kitchen": {"at": "en la cocina"},
            "roof": {"at": "en el tejado"},
            "beach": {"at": "en la playa"},
            "library": {"at": "en la biblioteca"},
            "school": {"at": "en la escuela"},
            "market": {"at": "en el mercado"},
            "forest": {"at": "en el bosque"},
            "bridge": {"at": "en el puente"},
            "hospital": {"at": "en el hospital"},
        },
        # "estar" for location of a definite subject, "hay" for an indefinite one.
        templates=("{s[def]} está {p[at]}.", "Hay {s[indef]} {p[at]}."),
    ),
    "fr": LanguageLexicon(
        subjects={
            "cat": {"def": "le chat", "indef": "un chat"},
            "dog": {"def": "le chien", "indef": "un chien"},
            "bird": {"def": "l'oiseau", "indef": "un oiseau"},
            "horse": {"def": "le cheval", "indef": "un cheval"},
            "rabbit": {"def": "le lapin", "indef": "un lapin"},
            "teacher": {"def": "l'enseignant", "indef": "un enseignant"},
            "doctor": {"def": "le médecin", "indef": "un médecin"},
            "child": {"def": "l'enfant", "indef": "un enfant"},
            "duck": {"def": "le canard", "indef": "un canard"},
            "student": {"def": "l'étudiant", "indef": "un étudiant"},
        },
        places={
            "garden": {"at": "dans le jardin"},
            "kitchen": {"at": "dans la cuisine"},
            "roof": {"at": "sur le toit"},
            "beach": {"at": "sur la plage"},
            "library": {"at": "à la bibliothèque"},
            "school": {"at": "à l'école"},
            "market": {"at": "au marché"},
            "forest": {"at": "dans la forêt"},
            "bridge": {"at": "sur le pont"},
            "hospital": {"at": "à l'hôpital"},
        },
        templates=("{s[def]} est {p[at]}.", "Il y a {s[indef]} {p[at]}."),
    ),
    "ja": LanguageLexicon(
        subjects={
            "cat": {"n": "猫"},
            "dog": {"n": "犬"},
            "bird": {"n": "鳥"},
            "horse": {"n": "馬"},
            "rabbit": {"n": "うさぎ"},
            "teacher": {"n": "先生"},
            "doctor": {"n": "医者"},
            "child": {"n": "子ども"},
            "duck": {"n": "アヒル"},
            "student": {"n": "学生"},
        },
        places={
            "garden": {"n": "庭"},
            "kitchen": {"n": "台所"},
            "roof": {"n": "屋根の上"},
            "beach": {"n": "浜辺"},
            "library": {"n": "図書館"},
            "school": {"n": "学校"},
            "market": {"n": "市場"},
            "forest": {"n": "森"},
            "bridge": {"n": "橋の上"},
            "hospital": {"n": "病院"},
        },
        # All subjects are animate, hence いる (not ある); topic は vs. new-information が.
        templates=("{s[n]}は{p[n]}にいます。", "{p[n]}に{s[n]}がいます。"),
    ),
    "ko": LanguageLexicon(
        # Particles depend on whether the noun ends in a consonant (은/이) or a vowel (는/가).
        subjects={
            "cat": {"top": "고양이는", "subj": "고양이가"},
            "dog": {"top": "개는", "subj": "개가"},
            "bird": {"top": "새는", "subj": "새가"},
            "horse": {"top": "말은", "subj": "말이"},
            "rabbit": {"top": "토끼는", "subj": "토끼가"},
            "teacher": {"top": "선생님은", "subj": "선생님이"},
            "doctor": {"top": "의사는", "subj": "의사가"},
            "child": {"top": "아이는", "subj": "아이가"},
            "duck": {"top": "오리는", "subj": "오리가"},
            "student": {"top": "학생은", "subj": "학생이"},
        },
        places={
            "garden": {"at": "정원에"},
            "kitchen": {"at": "부엌에"},
            "roof": {"at": "지붕 위에"},
            "beach": {"at": "해변에"},
            "library": {"at": "도서관에"},
            "school": {"at": "학교에"},
            "market": {"at": "시장에"},
            "forest": {"at": "숲에"},
            "bridge": {"at": "다리 위에"},
            "hospital": {"at": "병원에"},
        },
        templates=("{s[top]} {p[at]} 있습니다.", "{p[at]} {s[subj]} 있습니다."),
    ),
    "zh": LanguageLexicon(
        # The indefinite form carries the measure word the noun takes (只/匹/位/个).
        subjects={
            "cat": {"def": "猫", "indef": "一只猫"},
            "dog": {"def": "狗", "indef": "一只狗"},
            "bird": {"def": "鸟", "indef": "一只鸟"},
            "horse": {"def": "马", "indef": "一匹马"},
            "rabbit": {"def": "兔子", "indef": "一只兔子"},
            "teacher": {"def": "老师", "indef": "一位老师"},
            "doctor": {"def": "医生", "indef": "一位医生"},
            "child": {"def": "孩子", "indef": "一个孩子"},
            "duck": {"def": "鸭子", "indef": "一只鸭子"},
            "student": {"def": "学生", "indef": "一个学生"},
        },
        places={
            "garden": {"loc": "花园里"},
            "kitchen": {"loc": "厨房里"},
            "roof": {"loc": "屋顶上"},
            "beach": {"loc": "海滩上"},
            "library": {"loc": "图书馆里"},
            "school": {"loc": "学校里"},
            "market": {"loc": "市场上"},
            "forest": {"loc": "森林里"},
            "bridge": {"loc": "桥上"},
            "hospital": {"loc": "医院里"},
        },
        templates=("{s[def]}在{p[loc]}。", "{p[loc]}有{s[indef]}。"),
    ),
    "ar": LanguageLexicon(
        subjects={
            "cat": {"def": "القطة", "indef": "قطة"},
            "dog": {"def": "الكلب", "indef": "كلب"},
            "bird": {"def": "الطائر", "indef": "طائر"},
            "horse": {"def": "الحصان", "indef": "حصان"},
            "rabbit": {"def": "الأرنب", "indef": "أرنب"},
            "teacher": {"def": "المعلم", "indef": "معلم"},
            "doctor": {"def": "الطبيب", "indef": "طبيب"},
            "child": {"def": "الطفل", "indef": "طفل"},
            "duck": {"def": "البطة", "indef": "بطة"},
            "student": {"def": "الطالب", "indef": "طالب"},
        },
        places={
            "garden": {"at": "في الحديقة"},
            "kitchen": {"at": "في المطبخ"},
            "roof": {"at": "على السطح"},
            "beach": {"at": "على الشاطئ"},
            "library": {"at": "في المكتبة"},
            "school": {"at": "في المدرسة"},
            "market": {"at": "في السوق"},
            "forest": {"at": "في الغابة"},
            "bridge": {"at": "على الجسر"},
            "hospital": {"at": "في المستشفى"},
        },
        # Nominal sentences need no copula; an indefinite subject follows a fronted predicate.
        templates=("{s[def]} {p[at]}.", "{p[at]} {s[indef]}."),
    ),
    "hi": LanguageLexicon(
        subjects={
            "cat": {"n": "बिल्ली"},
            "dog": {"n": "कुत्ता"},
            "bird": {"n": "चिड़िया"},
            "horse": {"n": "घोड़ा"},
            "rabbit": {"n": "खरगोश"},
            "teacher": {"n": "शिक्षक"},
            "doctor": {"n": "डॉक्टर"},
            "child": {"n": "बच्चा"},
            "duck": {"n": "बत्तख"},
            "student": {"n": "छात्र"},
        },
        # Nouns before a postposition take the oblique case (बगीचा -> बगीचे में).
        places={
            "garden": {"at": "बगीचे में"},
            "kitchen": {"at": "रसोई में"},
            "roof": {"at": "छत पर"},
            "beach": {"at": "समुद्र तट पर"},
            "library": {"at": "पुस्तकालय में"},
            "school": {"at": "स्कूल में"},
            "market": {"at": "बाज़ार में"},
            "forest": {"at": "जंगल में"},
            "bridge": {"at": "पुल पर"},
            "hospital": {"at": "अस्पताल में"},
        },
        templates=("{s[n]} {p[at]} है।", "{p[at]} एक {s[n]} है।"),
    ),
    "th": LanguageLexicon(
        # Thai writes no spaces between words; the indefinite form carries the classifier
        # (ตัว for animals, คน for people).
        subjects={
            "cat": {"n": "แมว", "indef": "แมวตัวหนึ่ง"},
            "dog": {"n": "สุนัข", "indef": "สุนัขตัวหนึ่ง"},
            "bird": {"n": "นก", "indef": "นกตัวหนึ่ง"},
            "horse": {"n": "ม้า", "indef": "ม้าตัวหนึ่ง"},
            "rabbit": {"n": "กระต่าย", "indef": "กระต่ายตัวหนึ่ง"},
            "teacher": {"n": "ครู", "indef": "ครูคนหนึ่ง"},
            "doctor": {"n": "หมอ", "indef": "หมอคนหนึ่ง"},
            "child": {"n": "เด็ก", "indef": "เด็กคนหนึ่ง"},
            "duck": {"n": "เป็ด", "indef": "เป็ดตัวหนึ่ง"},
            "student": {"n": "นักเรียน", "indef": "นักเรียนคนหนึ่ง"},
        },
        places={
            "garden": {"at": "ในสวน"},
            "kitchen": {"at": "ในครัว"},
            "roof": {"at": "บนหลังคา"},
            "beach": {"at": "บนชายหาด"},
            "library": {"at": "ในห้องสมุด"},
            "school": {"at": "ที่โรงเรียน"},
            "market": {"at": "ที่ตลาด"},
            "forest": {"at": "ในป่า"},
            "bridge": {"at": "บนสะพาน"},
            "hospital": {"at": "ในโรงพยาบาล"},
        },
        templates=("{s[n]}อยู่{p[at]}", "มี{s[indef]}อยู่{p[at]}"),
    ),
    "ru": LanguageLexicon(
        subjects={
            "cat": {"n": "кошка"},
            "dog": {"n": "собака"},
            "bird": {"n": "птица"},
            "horse": {"n": "лошадь"},
            "rabbit": {"n": "кролик"},
            "teacher": {"n": "учитель"},
            "doctor": {"n": "врач"},
            "child": {"n": "ребёнок"},
            "duck": {"n": "утка"},
            "student": {"n": "студент"},
        },
        # Prepositional case, with в or на as each noun requires (в саду, на кухне).
        places={
            "garden": {"at": "в саду"},
            "kitchen": {"at": "на кухне"},
            "roof": {"at": "на крыше"},
            "beach": {"at": "на пляже"},
            "library": {"at": "в библиотеке"},
            "school": {"at": "в школе"},
            "market": {"at": "на рынке"},
            "forest": {"at": "в лесу"},
            "bridge": {"at": "на мосту"},
            "hospital": {"at": "в больнице"},
        },
        # The present tense has no copula; the second template uses находится ("is located").
        templates=("{s[n]} {p[at]}.", "{s[n]} находится {p[at]}."),
    ),
}

LANGUAGES: tuple[str, ...] = tuple(CORPUS)


Span = tuple[int, int]
"""[start, end) character offsets into a sentence's text."""


@dataclass(frozen=True)
class Sentence:
    """One rendered sentence, where it came from, and where its two slots sit in the text.

    The spans let a trainer tell which tokens carry the subject and which the place.
    """

    lang: str
    template: int
    subject: str
    place: str
    text: str
    subject_span: Span
    place_span: Span

    @property
    def key(self) -> MeaningKey:
        return (self.subject, self.place)


def all_keys() -> list[MeaningKey]:
    """Every meaning key, in a fixed order (subjects major, places minor)."""
    return [(s, p) for s in SUBJECTS for p in PLACES]


_FORMATTER = string.Formatter()


def render(lang: str, template: int, key: MeaningKey) -> Sentence:
    """The sentence of `lang`'s `template`-th template for `key`, with its slot spans."""
    lexicon = CORPUS[lang]
    subject, place = key
    values = {"s": lexicon.subjects[subject], "p": lexicon.places[place]}
    parts: list[str] = []
    spans: dict[str, Span] = {}
    position = 0
    for literal, field_name, _, _ in _FORMATTER.parse(lexicon.templates[template]):
        parts.append(literal)
        position += len(literal)
        if field_name is not None:
            value = str(_FORMATTER.get_field(field_name, (), values)[0])
            spans[field_name.split("[", 1)[0]] = (position, position + len(value))
            parts.append(value)
            position += len(value)
    text = "".join(parts)
    # Upper-casing one character never changes its length in these lexicons, so spans hold.
    text = text[:1].upper() + text[1:]
    return Sentence(lang, template, subject, place, text, spans["s"], spans["p"])


def sentences(keys: Iterable[MeaningKey], langs: Iterable[str] = LANGUAGES) -> list[Sentence]:
    """Every (language, template) rendering of each key, in a deterministic order."""
    key_list = list(keys)
    return [
        render(lang, t, key)
        for lang in langs
        for t in range(len(CORPUS[lang].templates))
        for key in key_list
    ]


def lexicon_entries(langs: Iterable[str] = LANGUAGES) -> list[str]:
    """Every word form and every fixed stretch of template text, one string each.

    Trained on whole sentences alone, a Unigram tokenizer this small learns pieces that span a
    slot and its neighbour ("▁猫在", "▁花园里有一只"), so a subject or place is cut differently
    in each combination and combinations it has not seen tokenize in unfamiliar ways. Adding the
    building blocks on their own steers it to pieces that respect word boundaries.
    """
    entries: list[str] = []
    for lang in langs:
        lexicon = CORPUS[lang]
        for table in (lexicon.subjects, lexicon.places):
            for forms in table.values():
                entries.extend(forms.values())
        for template in lexicon.templates:
            entries.extend(
                literal.strip()
                for literal, _, _, _ in _FORMATTER.parse(template)
                if literal.strip()
            )
    return entries


def corpus_sha256() -> str:
    """A hash of the corpus data, recorded in the bundle so a demo model names its exact data."""
    payload = {
        "subjects": SUBJECTS,
        "places": PLACES,
        "languages": {lang: asdict(lex) for lang, lex in CORPUS.items()},
    }
    blob = json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()
