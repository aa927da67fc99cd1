"""Language identification of probe inputs sent without a lang (lingua, offline)."""

from __future__ import annotations

import pytest

from service.probe.language import UNDETERMINED, InputLanguageDetector
from service.settings import Settings


@pytest.fixture(scope="module")
def detector() -> InputLanguageDetector:
    return InputLanguageDetector(Settings.model_fields["probe_detect_languages"].default)


def test_sentences_are_detected_among_the_configured_languages(
    detector: InputLanguageDetector,
) -> None:
    texts = [
        "Die Katze schläft im Garten, während der Hund im Haus bellt.",
        "El gato duerme en el jardín mientras el perro ladra en la casa.",
        "猫は庭で寝ていて、犬は家の中で吠えています。",
        "Кошка спит в саду, а собака лает в доме.",
        "แมวนอนอยู่ในสวนขณะที่สุนัขเห่าอยู่ในบ้าน",
    ]
    assert detector.detect(texts) == ["de", "es", "ja", "ru", "th"]


def test_text_without_letters_is_undetermined(detector: InputLanguageDetector) -> None:
    assert detector.detect(["12345 !!!"]) == [UNDETERMINED]
    assert detector.detect([]) == []


def test_the_report_names_the_method_and_candidates(detector: InputLanguageDetector) -> None:
    assert detector.info.method.startswith("lingua-language-detector ")
    assert "low-accuracy" in detector.info.method
    assert detector.info.languages[:3] == ("ar", "bg", "de")


def test_an_unknown_code_fails_with_the_setting_name() -> None:
    with pytest.raises(ValueError, match="POLYPROBE_PROBE_DETECT_LANGUAGES: 'xx'"):
        InputLanguageDetector("en,xx")
