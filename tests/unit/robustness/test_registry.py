"""The registry: what is registered, and the errors the HTTP layer turns into 422s."""

from __future__ import annotations

from pathlib import Path

import pytest

import robustness
from robustness.registry import (
    ANY_SCRIPT,
    MissingPairError,
    PerturbationSpecError,
    SeverityOutOfRangeError,
    UnknownFamilyError,
    UnsupportedScriptError,
    all_families,
    get_family,
    resolve,
    text_family,
)

EXPECTED = {
    "arabic_harakat_removal",
    "case_change",
    "char_delete",
    "char_insert",
    "char_substitute",
    "char_swap",
    "diacritic_addition",
    "diacritic_removal",
    "homoglyph",
    "invisible_chars",
    "keyboard_typo",
    "pair_name_mismatch",
    "pair_number_mismatch",
    "pair_swap",
    "pair_word_order",
    "punctuation_noise",
    "romanisation",
    "space_typo",
    "whitespace_noise",
    "width_shift",
}


def test_all_built_in_families_are_registered_with_their_metadata() -> None:
    families = all_families()
    assert [f.name for f in families] == sorted(EXPECTED)
    for family in families:
        assert family.description and family.severity_meaning and family.version
        assert family.scripts == ANY_SCRIPT or family.scripts
        assert family.spec_version == f"{family.name}@{family.version}"


def test_label_preservation_decisions() -> None:
    directional = {f.name for f in all_families() if not f.label_preserving}
    assert directional == {"pair_word_order", "pair_number_mismatch", "pair_name_mismatch"}
    assert get_family("pair_swap").symmetric_task_only
    assert [f.name for f in all_families() if f.kind == "pair"] == [
        "pair_name_mismatch",
        "pair_number_mismatch",
        "pair_swap",
        "pair_word_order",
    ]


def test_unknown_family_names_the_known_ones() -> None:
    with pytest.raises(UnknownFamilyError) as caught:
        get_family("typo")
    message = str(caught.value)
    assert "'typo'" in message and "keyboard_typo" in message and "char_swap" in message
    assert isinstance(caught.value, KeyError) and isinstance(caught.value, ValueError)
    details = caught.value.details()
    assert details["field"] == "family" and "keyboard_typo" in details["allowed"]  # type: ignore[operator]


@pytest.mark.parametrize("severity", [-0.01, 1.01, float("nan"), "high", None, True])
def test_severity_outside_the_unit_interval_is_refused(severity: object) -> None:
    with pytest.raises(SeverityOutOfRangeError) as caught:
        resolve("keyboard_typo", severity)
    message = str(caught.value)
    assert "keyboard_typo" in message and "[0, 1]" in message and repr(severity) in message
    assert caught.value.field == "severity"


@pytest.mark.parametrize("severity", [0, 0.0, 0.5, 1, 1.0])
def test_severity_bounds_are_inclusive(severity: float) -> None:
    assert resolve("keyboard_typo", severity).name == "keyboard_typo"


def test_unsupported_language_names_family_scripts_and_fix() -> None:
    with pytest.raises(UnsupportedScriptError) as caught:
        resolve("keyboard_typo", 0.5, lang="ja")
    message = str(caught.value)
    assert "keyboard_typo" in message and "'ja'" in message and "Hiragana" in message
    assert "Devanagari" in message and "FAMILIES.md" in message
    assert caught.value.got == "ja"


def test_unsupported_text_script_is_judged_by_the_dominant_script() -> None:
    with pytest.raises(UnsupportedScriptError, match="dominant script is Han"):
        resolve("case_change", 0.5, text="東京は大きい")
    assert resolve("case_change", 0.5, text="Tokyo 東京").name == "case_change"
    # Digits and punctuation only: nothing to refuse.
    assert resolve("case_change", 0.5, text="2024 !").name == "case_change"
    # An unknown language tag is judged by the text alone.
    assert resolve("case_change", 0.5, lang="xx", text="Hello").name == "case_change"


def test_any_script_families_accept_every_language() -> None:
    for lang in ("ja", "th", "hi", "ar", "ko", "zh"):
        resolve("char_delete", 0.3, lang=lang)
        resolve("width_shift", 0.3, lang=lang)


def test_pair_families_need_a_pair() -> None:
    with pytest.raises(MissingPairError, match="pair_swap"):
        resolve("pair_swap", 0.5, has_pair=False)
    assert resolve("pair_swap", 0.5, has_pair=True).kind == "pair"


def test_all_spec_errors_are_value_errors_with_details() -> None:
    for call in (
        lambda: resolve("nope", 0.5),
        lambda: resolve("char_swap", 2),
        lambda: resolve("homoglyph", 0.5, lang="th"),
    ):
        with pytest.raises(PerturbationSpecError) as caught:
            call()
        assert isinstance(caught.value, ValueError)
        assert set(caught.value.details()) == {"field", "allowed", "got", "message"}


def test_registering_a_name_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        text_family(
            name="char_swap",
            scripts=ANY_SCRIPT,
            label_preserving=True,
            description="duplicate",
            severity_meaning="nothing",
        )(lambda text, rng, severity, lang: text)


def test_the_docs_list_every_family() -> None:
    families_md = (Path(robustness.__file__).parent / "FAMILIES.md").read_text(encoding="utf-8")
    for family in all_families():
        assert f"`{family.name}`" in families_md
        assert f"`{family.name}`" in (robustness.__doc__ or "")
