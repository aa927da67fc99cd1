"""The black-box attack search against tiny deterministic models whose flips are known exactly."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import pytest
import regex

from robustness.attack import (
    AttackConfig,
    AttackInput,
    Lockstep,
    Probabilities,
    TextPair,
    check_config,
    run_attacks,
    search,
)
from robustness.registry import PerturbationSpecError
from robustness.segment import count_orphans


class Counting:
    """A model that records every query it gets, so query counts can be checked against it."""

    def __init__(self, p_positive: Callable[[TextPair], float]) -> None:
        self.p_positive = p_positive
        self.queries: list[TextPair] = []

    def __call__(self, pairs: Sequence[TextPair]) -> Probabilities:
        self.queries.extend(pairs)
        return [[1.0 - p, p] for p in map(self.p_positive, pairs)]


def words(text: str) -> set[str]:
    return set(regex.findall(r"\w+", text))


def needs_good(pair: TextPair) -> float:
    return 0.9 if "good" in words(pair[0]) else 0.2


def constant(pair: TextPair) -> float:
    return 0.8


SWAP_ONLY = AttackConfig(edits=("char_swap",), query_budget=50)


def test_it_finds_the_one_word_that_flips_and_counts_every_query() -> None:
    model = Counting(needs_good)
    (result,) = run_attacks([AttackInput("The film was good and long.")], model, SWAP_ONLY)
    assert result.success and result.stop == "flipped"
    (edit,) = result.edits
    assert (edit.field, edit.start, edit.original, edit.family) == ("text", 13, "good", "char_swap")
    assert edit.edited != "good" and sorted(edit.edited) == sorted("good")
    assert result.text == f"The film was {edit.edited} and long."
    # 1 clean query, 6 leave-one-out deletions, 1 swap of "good" (ranked first).
    assert result.queries == len(model.queries) == 8
    assert model.queries[7] == (result.text, None)
    assert (result.original_label, result.final_label) == (1, 0)
    assert (result.original_probability, result.final_probability) == (0.9, 0.2)
    assert result.words == 6


@pytest.mark.parametrize("budget", [2, 5, 17, 40])
def test_an_unflippable_input_spends_exactly_its_budget(budget: int) -> None:
    model = Counting(constant)
    (result,) = run_attacks(
        [AttackInput("Nothing in this sentence matters at all.")],
        model,
        AttackConfig(query_budget=budget, max_word_share=1.0),
    )
    assert not result.success and result.stop == "budget"
    assert result.queries == len(model.queries) == budget
    assert result.edits == () and result.text == "Nothing in this sentence matters at all."


def test_a_search_that_runs_out_of_words_is_a_failure_within_budget() -> None:
    model = Counting(constant)
    (result,) = run_attacks(
        [AttackInput("Two words.")], model, AttackConfig(query_budget=1000, max_word_share=1.0)
    )
    assert not result.success and result.stop == "exhausted"
    assert result.queries == len(model.queries) < 1000
    assert result.edits == ()


def rule_model(pair: TextPair) -> float:
    """Flips only when beta and gamma are both edited; alpha looks important on its own."""
    missing = {"alpha", "beta", "gamma"} - words(pair[0])
    if {"beta", "gamma"} <= missing:
        return 0.2
    if {"alpha", "beta"} <= missing:
        return 0.55
    return 0.6 if "alpha" in missing else 0.9


def test_edits_the_flip_does_not_need_are_undone() -> None:
    model = Counting(rule_model)
    config = replace(SWAP_ONLY, max_word_share=1.0)
    (result,) = run_attacks([AttackInput("alpha beta gamma delta")], model, config)
    assert result.success
    # Greedy keeps alpha (0.9 -> 0.6), beta (-> 0.55), then gamma flips; undoing alpha keeps
    # the flip, undoing beta or gamma does not.
    assert [e.original for e in result.edits] == ["beta", "gamma"]
    assert result.text.startswith("alpha ") and result.text.endswith(" delta")
    # 1 clean + 4 deletions + 3 single-candidate edits + 3 undo checks.
    assert result.queries == len(model.queries) == 11


def test_the_word_share_caps_the_edit() -> None:
    (result,) = run_attacks(
        [AttackInput("alpha beta gamma delta")],
        Counting(rule_model),
        replace(SWAP_ONLY, max_word_share=0.3),  # ceil(0.3 x 4) = 2 words
    )
    assert not result.success and result.stop == "max_words"
    assert [e.original for e in result.edits] == ["alpha", "beta"]
    assert result.final_probability == 0.55


def test_severity_zero_changes_nothing_and_costs_one_query() -> None:
    model = Counting(needs_good)
    (result,) = run_attacks(
        [AttackInput("It was good.")], model, replace(SWAP_ONLY, max_word_share=0.0)
    )
    assert (result.success, result.stop, result.queries, result.text) == (
        False,
        "max_words",
        1,
        "It was good.",
    )


def test_the_search_is_deterministic_under_its_seed() -> None:
    items = [AttackInput(f"The {w} was good today.", example_id=w) for w in ("film", "play")]
    config = AttackConfig(edits=("char_substitute", "char_insert"), query_budget=30)
    first = run_attacks(items, Counting(needs_good), config)
    assert first == run_attacks(items, Counting(needs_good), config)
    by_seed = {
        run_attacks(items, Counting(needs_good), replace(config, seed=seed))[0].text
        for seed in range(8)
    }
    assert len(by_seed) > 1


def test_lockstep_results_do_not_depend_on_the_other_inputs() -> None:
    alone = run_attacks([AttackInput("The film was good.")], Counting(needs_good), SWAP_ONLY)
    together = run_attacks(
        [AttackInput("Nothing here."), AttackInput("The film was good.")],
        Counting(needs_good),
        SWAP_ONLY,
    )
    assert together[1] == alone[0]


def test_pairs_edit_only_the_target_sentence() -> None:
    def second_needs_good(pair: TextPair) -> float:
        return 0.9 if "good" in words(pair[1] or "") else 0.2

    item = AttackInput("It is good.", "Very good indeed.")
    results = {
        target: run_attacks([item], Counting(second_needs_good), replace(SWAP_ONLY, target=target))[
            0
        ]
        for target in ("both", "text", "text_pair")
    }
    for target in ("both", "text_pair"):
        (edit,) = results[target].edits
        assert (edit.field, edit.start, edit.original) == ("text_pair", 5, "good")
        assert results[target].text == "It is good."
    assert results["both"].queries == 1 + 6 + 1
    assert results["text_pair"].queries == 1 + 3 + 1
    only_first = results["text"]
    assert not only_first.success and only_first.stop == "exhausted"
    assert (only_first.text, only_first.text_pair) == ("It is good.", "Very good indeed.")


def test_unspaced_scripts_fall_back_to_grapheme_words() -> None:
    def needs_cat(pair: TextPair) -> float:
        return 0.9 if "猫" in pair[0] else 0.1

    config = AttackConfig(edits=("char_swap", "char_delete"), query_budget=40)
    (result,) = run_attacks(
        [AttackInput("猫は庭にいます。", lang="ja")], Counting(needs_cat), config
    )
    assert result.success
    (edit,) = result.edits
    assert (edit.original, edit.edited, edit.family, edit.start) == ("猫", "", "char_delete", 0)
    assert result.text == "は庭にいます。"
    assert result.words == 7  # seven clusters, the full stop is not a word


def test_edits_keep_combining_marks_with_their_base() -> None:
    def needs_hindi_word(pair: TextPair) -> float:
        return 0.9 if "हिन्दी" in pair[0] else 0.1

    (result,) = run_attacks(
        [AttackInput("हिन्दी एक भाषा है।", lang="hi")],
        Counting(needs_hindi_word),
        AttackConfig(query_budget=60),
    )
    assert result.success and result.edits[0].original == "हिन्दी"
    assert count_orphans(result.text) == 0


def test_edits_the_tokenizer_erases_are_not_sent_to_the_model() -> None:
    model = Counting(lambda pair: 0.9 if "good" in words(pair[0].lower()) else 0.2)
    config = AttackConfig(edits=("case_change", "char_swap"), query_budget=50)

    def lowercase(pairs: Sequence[TextPair]) -> list[str]:
        return [pair[0].lower() for pair in pairs]

    (unfiltered,) = run_attacks([AttackInput("It was good.")], Counting(model.p_positive), config)
    (result,) = run_attacks([AttackInput("It was good.")], model, config, encode=lowercase)
    assert result.success and result.edits[0].family == "char_swap"
    assert all(q[0].lower() != "it was good." for q in model.queries[1 + 3 :])
    assert result.queries == unfiltered.queries - 1


@pytest.mark.parametrize(
    ("config", "field", "message"),
    [
        (AttackConfig(edits=("typo",)), "edits", "unknown perturbation family 'typo'"),
        (AttackConfig(edits=("pair_word_order",)), "edits", "cannot be an attack edit"),
        (AttackConfig(edits=("char_swap", "char_swap")), "edits", "listed twice"),
        (AttackConfig(edits=()), "edits", "at least one edit family"),
        (AttackConfig(query_budget=1), "query_budget", "at least 2"),
        (AttackConfig(max_word_share=1.5), "severity", "must be a number in [0, 1]"),
        (AttackConfig(candidates_per_family=0), "samples", "at least one candidate"),
    ],
)
def test_bad_configs_are_refused_with_the_field(
    config: AttackConfig, field: str, message: str
) -> None:
    with pytest.raises(PerturbationSpecError, match=regex.escape(message)) as raised:
        check_config(config)
    assert raised.value.field == field


def test_lockstep_refuses_the_wrong_number_of_rows() -> None:
    lockstep = Lockstep([search(AttackInput("a b"), SWAP_ONLY, check_config(SWAP_ONLY))])
    assert lockstep.queries() == [("a b", None)]
    with pytest.raises(ValueError, match="expected 1 probability rows, got 2"):
        lockstep.feed([[0.5, 0.5], [0.5, 0.5]])
