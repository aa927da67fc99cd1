"""Every family over the first rows of every PAWS-X and XNLI dev language.

The property tests sample these sentences; this sweep runs all of them once, so a language that
breaks a family cannot hide behind sampling, and checks that each family really edits the
languages it claims to support instead of silently returning the input.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from robustness.registry import UnsupportedScriptError, all_families, check_script
from tests.unit.robustness.conftest import RealPair
from tests.unit.robustness.invariants import assert_no_new_joiners, assert_well_formed

# Families whose every supported language should be edited in nearly every sentence. Families
# that need particular content (accents, harakat, numbers, names, punctuation, ASCII or kana for
# width changes) are exempt.
ALWAYS_APPLICABLE = {
    "char_delete",
    "char_insert",
    "char_substitute",
    "char_swap",
    "keyboard_typo",
    "invisible_chars",
    "whitespace_noise",
    "case_change",
    "romanisation",
    "space_typo",
    "pair_swap",
    "pair_word_order",
}


@pytest.mark.needs_shared_data
def test_every_family_on_every_language(real_pairs: list[RealPair]) -> None:
    changed: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for family in all_families():
        for pair in real_pairs:
            try:
                check_script(family, lang=pair.lang, text=pair.text)
            except UnsupportedScriptError:
                continue
            rng = np.random.default_rng(len(pair.text))
            inputs = (pair.text, pair.text_pair)
            if family.kind == "pair":
                result = tuple(family.function(*inputs, rng, 0.5, pair.lang))
            else:
                result = tuple(family.function(text, rng, 0.5, pair.lang) for text in inputs)
            # Marks and joiners are compared with the sentence each output came from.
            sources = inputs[::-1] if family.name == "pair_swap" else inputs
            for before, after in zip(sources, result, strict=True):
                assert_well_formed(before, after)
                if family.name not in {"char_insert", "char_substitute"}:
                    assert_no_new_joiners(before, after)
            changed[(family.name, pair.source)].append(result != inputs)

    languages_per_family: dict[str, set[str]] = defaultdict(set)
    too_timid = []
    for (name, source), flags in changed.items():
        languages_per_family[name].add(source)
        share = sum(flags) / len(flags)
        if name in ALWAYS_APPLICABLE and share < 0.9:
            too_timid.append(f"{name} edited only {share:.0%} of {source} sentences")
    assert not too_timid
    # The families meant for these languages really do reach them.
    assert {"xnli/dev/hi", "xnli/dev/th", "xnli/dev/ar", "pawsx/dev/ko"} <= languages_per_family[
        "keyboard_typo"
    ]
    assert "xnli/dev/ar" in languages_per_family["arabic_harakat_removal"]
    assert len(languages_per_family["char_swap"]) == 22
