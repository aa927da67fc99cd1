"""Seeded multilingual perturbations and robustness statistics (pure Python, no web or ML imports).

Perturbation families (see FAMILIES.md for scripts and severity): a family is a pure function
`(text, rng, severity, lang) -> text` (pair families take and return `(text, text_pair)`),
deterministic under a seed, with severity 0 the identity and severity the fraction of eligible
units edited. Every edit works on grapheme clusters, so Devanagari, Thai, Tamil, Hangul and emoji
sequences stay well-formed.

- characters: `char_delete`, `char_insert`, `char_substitute`, `char_swap`
- keyboard: `keyboard_typo` (QWERTY, QWERTZ, AZERTY, Spanish, ЙЦУКЕН, Greek, Arabic 101,
  InScript, Kedmanee, Korean 2-set at jamo level)
- diacritics: `diacritic_removal`, `diacritic_addition`, `arabic_harakat_removal`
- unicode noise: `homoglyph`, `invisible_chars`, `width_shift`
- orthography: `case_change`, `whitespace_noise`, `space_typo`, `punctuation_noise`
- transliteration: `romanisation`
- sentence pairs: `pair_swap` (invariance for symmetric tasks), `pair_word_order`,
  `pair_number_mismatch`, `pair_name_mismatch` (directional)

Entry points:
- `registry.resolve(name, severity, lang=..., text=...)` validates a request up front; its errors
  (`PerturbationSpecError` subclasses) name the family, the allowed values and the fix.
- `apply_perturbation(spec, text, text_pair, seed=..., sample_index=..., lang=...)` applies a
  spec with an RNG derived from (seed, example, family@version, sample, field), so results do
  not depend on batch order; `is_noop(original, perturbed, normalise)` flags edits the model's
  normaliser removes.
- `robustness.stats`: Wilson intervals, paired and cluster bootstrap, exact McNemar, confidence
  and margin drops, Holm / Benjamini-Hochberg, and `aggregate` per family x language or script.
"""

from robustness.apply import (
    RNG_SCHEME,
    PerturbationSpec,
    PerturbedExample,
    apply_perturbation,
    is_noop,
    nfkc,
)
from robustness.registry import (
    Family,
    MissingPairError,
    PerturbationSpecError,
    SeverityOutOfRangeError,
    UnknownFamilyError,
    UnsupportedScriptError,
    all_families,
    dominant_script,
    get_family,
    resolve,
)

__all__ = [
    "RNG_SCHEME",
    "Family",
    "MissingPairError",
    "PerturbationSpec",
    "PerturbationSpecError",
    "PerturbedExample",
    "SeverityOutOfRangeError",
    "UnknownFamilyError",
    "UnsupportedScriptError",
    "all_families",
    "apply_perturbation",
    "dominant_script",
    "get_family",
    "is_noop",
    "nfkc",
    "resolve",
]
