"""Language identification for probe inputs sent without a `lang`, with lingua (offline).

The detector chooses only among the configured languages: every extra candidate is another
chance to confuse close languages (es/pt, ru/bg, hi/mr). Low-accuracy mode (trigram models
only) loads in a fraction of a second and ~30 MB, where high-accuracy mode takes seconds and
hundreds of MB; on PAWS-X and XNLI sentence pairs both agree within a point, because the
weakness of low-accuracy mode is single words and very short phrases.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version

from lingua import IsoCode639_1, LanguageDetector, LanguageDetectorBuilder

UNDETERMINED = "und"  # BCP 47's tag for "language not determined"


@dataclass(frozen=True)
class LanguageDetectorInfo:
    """What a response says about how languages were detected."""

    method: str
    languages: tuple[str, ...]


class InputLanguageDetector:
    """A lingua detector restricted to `languages` ("en,de,zh"), built once per service."""

    def __init__(self, languages: str) -> None:
        codes = []
        for code in languages.split(","):
            try:
                codes.append(IsoCode639_1.from_str(code))
            except ValueError:
                raise ValueError(
                    f"POLYPROBE_PROBE_DETECT_LANGUAGES: {code!r} is not an ISO 639-1 code "
                    "that lingua knows (use two-letter codes such as en, de, zh)"
                ) from None
        self.info = LanguageDetectorInfo(
            method=f"lingua-language-detector {version('lingua-language-detector')}, "
            "low-accuracy mode",
            languages=tuple(sorted({code.name.lower() for code in codes})),
        )
        self._detector: LanguageDetector = (
            LanguageDetectorBuilder.from_iso_codes_639_1(*codes)
            .with_low_accuracy_mode()
            .with_preloaded_language_models()
            .build()
        )

    def detect(self, texts: Sequence[str]) -> list[str]:
        """ISO 639-1 code per text, or "und" when no candidate fits (digits, emoji only)."""
        if not texts:
            return []
        found = self._detector.detect_languages_in_parallel_of(list(texts))
        return [
            UNDETERMINED if language is None else language.iso_code_639_1.name.lower()
            for language in found
        ]
