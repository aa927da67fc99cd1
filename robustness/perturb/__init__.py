"""Built-in perturbation families; importing this package registers them all."""

from robustness.perturb import (
    characters,
    diacritics,
    keyboard,
    orthography,
    pairs,
    transliteration,
    unicode_noise,
)

__all__ = [
    "characters",
    "diacritics",
    "keyboard",
    "orthography",
    "pairs",
    "transliteration",
    "unicode_noise",
]
