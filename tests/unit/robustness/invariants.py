"""Checks every perturbation output must pass, shared by the example and property tests.

Deliberately independent of robustness.segment: the tests segment with their own `\\X` so that
a library that split clusters wrongly could not also judge itself correct.
"""

from __future__ import annotations

import regex

JOINERS = ("\u200c", "\u200d")
_CLUSTER = regex.compile(r"\X")
_ORPHAN = regex.compile(r"(?:^|(?<=[\s\p{Cc}]))[\p{M}\p{GCB=Extend}\p{GCB=SpacingMark}]")


def clusters(text: str) -> list[str]:
    return list(_CLUSTER.findall(text))


def orphans(text: str) -> int:
    """Marks with no base: at the start of the text or right after whitespace or a control."""
    return len(_ORPHAN.findall(text))


def assert_well_formed(original: str, perturbed: str) -> None:
    """Valid UTF-8, no lone surrogates, and no combining mark orphaned by the edit."""
    assert isinstance(perturbed, str)
    perturbed.encode("utf-8")  # raises on lone surrogates
    assert orphans(perturbed) <= orphans(original), (original, perturbed)


def assert_no_new_joiners(original: str, perturbed: str) -> None:
    for joiner in JOINERS:
        assert perturbed.count(joiner) <= original.count(joiner), (original, perturbed)


def changed_window(original: str, perturbed: str) -> tuple[list[str], list[str]]:
    """The clusters of each side left after removing the common prefix and suffix clusters."""
    before, after = clusters(original), clusters(perturbed)
    prefix = 0
    while prefix < min(len(before), len(after)) and before[prefix] == after[prefix]:
        prefix += 1
    suffix = 0
    while (
        suffix < min(len(before), len(after)) - prefix
        and before[len(before) - 1 - suffix] == after[len(after) - 1 - suffix]
    ):
        suffix += 1
    return before[prefix : len(before) - suffix], after[prefix : len(after) - suffix]


def is_subsequence(small: list[str], big: list[str]) -> bool:
    items = iter(big)
    return all(any(x == y for y in items) for x in small)
