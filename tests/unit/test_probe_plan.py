"""Turning probe requests into specs, inputs and samples: checks, languages, reproducibility."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from pydantic import ValidationError

from service.errors import InvalidInput, PayloadTooLarge
from service.probe.plan import (
    Limits,
    ProbePlan,
    canonical_lang,
    check_gold_labels,
    check_perturbations,
    check_size,
    check_unique_ids,
    perturb,
    prepare_inputs,
)
from service.probe.schemas import PerturbationRequest, ProbeInput, ProbeRequest


def specs(*items: dict[str, object], pair_model: bool = True):  # type: ignore[no-untyped-def]
    return check_perturbations(
        [PerturbationRequest.model_validate(item) for item in items], pair_model=pair_model
    )


def test_specs_resolve_to_families_in_request_order() -> None:
    resolved = specs(
        {"family": "char_swap", "severity": 0.1},
        {"family": "pair_word_order", "severity": 0.5, "samples": 3},
    )
    assert [(s.index, s.family.name, s.severity, s.samples) for s in resolved] == [
        (0, "char_swap", 0.1, 1),
        (1, "pair_word_order", 0.5, 3),
    ]
    assert [s.directional for s in resolved] == [False, True]


def test_unknown_family_lists_the_known_ones() -> None:
    with pytest.raises(InvalidInput) as caught:
        specs({"family": "char_swap", "severity": 0.1}, {"family": "typo", "severity": 0.1})
    message = caught.value.message
    assert message.startswith("perturbations[1].family: unknown perturbation family 'typo'")
    assert "char_swap" in message and "keyboard_typo" in message
    assert caught.value.details[0]["perturbation"] == 1
    assert "keyboard_typo" in caught.value.details[0]["allowed"]


def test_severity_out_of_range_says_what_it_means_for_the_family() -> None:
    with pytest.raises(InvalidInput, match=r"perturbations\[0\]\.severity: .*\[0, 1\].*got 1\.5"):
        specs({"family": "char_delete", "severity": 1.5})


def test_pair_families_and_targets_need_a_pair_model() -> None:
    with pytest.raises(InvalidInput, match=r"perturbations\[0\]\.text_pair: .*sentence pairs"):
        specs({"family": "pair_swap", "severity": 1.0}, pair_model=False)
    with pytest.raises(InvalidInput, match="gets single texts here"):
        specs({"family": "char_swap", "severity": 0.1, "target": "text_pair"}, pair_model=False)
    with pytest.raises(InvalidInput, match="edits the pair as a whole"):
        specs({"family": "pair_swap", "severity": 1.0, "target": "text"})
    assert specs({"family": "char_swap", "severity": 0.1, "target": "text_pair"})[0].target == (
        "text_pair"
    )


def test_a_repeated_spec_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"perturbations\[2\] repeats perturbations\[0\]"):
        specs(
            {"family": "char_swap", "severity": 0.1},
            {"family": "char_swap", "severity": 0.2},
            {"family": "char_swap", "severity": 0.1, "samples": 4},
        )


def test_samples_below_one_and_bad_language_tags_fail_schema_validation() -> None:
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        PerturbationRequest(family="char_swap", severity=0.1, samples=0)
    with pytest.raises(ValidationError, match="lang"):
        ProbeInput(text="x", lang="german!")
    with pytest.raises(ValidationError, match="perturbations"):
        ProbeRequest(inputs=[ProbeInput(text="x")], perturbations=[])


LIMITS = Limits(
    max_inputs=12,
    max_evaluations=50,
    inputs_setting="POLYPROBE_MAX_PROBE_INPUTS",
    evaluations_setting="POLYPROBE_MAX_PROBE_EVALUATIONS",
    advice="submit it as a job",
)


def test_size_counts_inputs_times_samples_times_models() -> None:
    resolved = specs(
        {"family": "char_swap", "severity": 0.1, "samples": 3},
        {"family": "char_delete", "severity": 0.1, "samples": 2},
    )
    check_size(10, resolved, 1, LIMITS)
    with pytest.raises(PayloadTooLarge) as caught:
        check_size(10, resolved, 2, LIMITS)
    assert caught.value.message == (
        "this probe needs 100 perturbed evaluations (10 inputs x 5 samples over all "
        "perturbations x 2 models); the limit is 50 (POLYPROBE_MAX_PROBE_EVALUATIONS): send "
        "fewer inputs or samples, or submit it as a job"
    )
    with pytest.raises(PayloadTooLarge, match=r"13 inputs in one probe; the limit is 12 \(POLY"):
        check_size(13, resolved[:1], 1, LIMITS)


def test_gold_labels_must_be_model_labels() -> None:
    inputs = [ProbeInput(text="a", label="paraphrase"), ProbeInput(text="b", label="para")]
    with pytest.raises(InvalidInput) as caught:
        check_gold_labels(inputs, ["not_paraphrase", "paraphrase"], "demo")
    assert caught.value.message == (
        "inputs[1].label 'para' is not a label of model demo; its labels are: "
        "not_paraphrase, paraphrase"
    )


def test_ids_must_be_unique() -> None:
    check_unique_ids([ProbeInput(text="a", id="1"), ProbeInput(text="b"), ProbeInput(text="c")])
    with pytest.raises(InvalidInput, match=r"inputs\[2\]\.id '1' repeats inputs\[0\]\.id"):
        check_unique_ids(
            [ProbeInput(text="a", id="1"), ProbeInput(text="b"), ProbeInput(text="c", id="1")]
        )


@pytest.mark.parametrize(
    ("tag", "canonical"),
    [("DE", "de"), ("pt-br", "pt-BR"), ("SR-LATN", "sr-Latn"), ("zh-hant-tw", "zh-Hant-TW")],
)
def test_language_tags_get_bcp47_case(tag: str, canonical: str) -> None:
    assert canonical_lang(tag) == canonical


def test_languages_are_taken_when_given_and_detected_otherwise() -> None:
    seen: list[Sequence[str]] = []

    def detect(texts: Sequence[str]) -> list[str]:
        seen.append(list(texts))
        return ["ru" for _ in texts]

    inputs = prepare_inputs(
        [
            ProbeInput(text="Die Katze", text_pair="Der Hund", lang="DE", label="paraphrase"),
            ProbeInput(text="Кошка спит", text_pair="Собака спит", id="x"),
        ],
        detect,
    )
    assert seen == [["Кошка спит\nСобака спит"]]  # only undetermined inputs, both sentences
    assert [(i.lang, i.lang_detected, i.script, i.gold, i.id) for i in inputs] == [
        ("de", False, "Latin", "paraphrase", None),
        ("ru", True, "Cyrillic", None, "x"),
    ]


def _inputs():  # type: ignore[no-untyped-def]
    return prepare_inputs(
        [
            ProbeInput(
                text="Die Katze schläft im Garten.",
                text_pair="Im Garten schläft die Katze.",
                lang="de",
            ),
            ProbeInput(
                text="猫は庭で寝ています。", text_pair="庭で猫が寝ています。", lang="ja", id="j1"
            ),
        ],
        lambda texts: ["und"] * len(texts),
    )


def test_samples_are_reproducible_from_the_seed_and_differ_across_seeds() -> None:
    resolved = specs({"family": "char_swap", "severity": 0.3, "samples": 2})
    first = perturb(_inputs(), resolved, 11, refuse_unsupported=False)
    assert first == perturb(_inputs(), resolved, 11, refuse_unsupported=False)
    assert first != perturb(_inputs(), resolved, 12, refuse_unsupported=False)
    assert [(s.spec, s.input, s.sample_index) for s in first] == [
        (0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1),
    ]  # fmt: skip
    assert all(s.changed and s.skipped is None for s in first)


def test_unsupported_scripts_are_skipped_or_refused_on_request() -> None:
    resolved = specs({"family": "keyboard_typo", "severity": 0.2})
    german, japanese = perturb(_inputs(), resolved, 0, refuse_unsupported=False)
    assert german.skipped is None and german.changed
    assert japanese.skipped is not None and "keyboard_typo" in japanese.skipped
    assert (japanese.text, japanese.changed) == ("猫は庭で寝ています。", False)
    with pytest.raises(
        InvalidInput, match=r"perturbations\[0\] cannot handle inputs\[1\] \(lang ja"
    ):
        perturb(_inputs(), resolved, 0, refuse_unsupported=True)


def test_a_plan_prefix_holds_the_first_specs_and_their_samples() -> None:
    resolved = specs(
        {"family": "char_swap", "severity": 0.3, "samples": 2},
        {"family": "char_delete", "severity": 0.3},
    )
    inputs = _inputs()
    full = ProbePlan(
        inputs, tuple(resolved), perturb(inputs, resolved, 0, refuse_unsupported=False), 0
    )
    assert (full.sample_range(0), full.sample_range(1)) == (range(0, 4), range(4, 6))
    first = full.prefix(1)
    assert first.specs == full.specs[:1] and first.samples == full.samples[:4]
    assert full.prefix(2) == full
