"""No-ops by token ids, and predictions put back on the plan."""

from __future__ import annotations

import anyio
from prometheus_client.parser import text_string_to_metric_families
from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel

from export.features import BundleTokenizer, TextPair
from service.metrics import ServiceMetrics
from service.probe.plan import PreparedInput, ProbePlan, Sample
from service.probe.run import publish_gauges, score_in_batches
from service.probe.schemas import Interval
from service.probe.scoring import Scored, evaluations, noop_flags, token_ids, visible

WORDS = ["<pad>", "<unk>", "the", "cat", "sleeps", "dog", "runs", "a"]


def tokenizer(max_length: int = 16) -> BundleTokenizer:
    raw = Tokenizer(WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    raw.normalizer = normalizers.NFKC()
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    return BundleTokenizer(raw, max_length=max_length, input_names=["input_ids", "attention_mask"])


def plan(texts: list[str], samples: list[tuple[int, str, bool, str | None]]) -> ProbePlan:
    inputs = tuple(
        PreparedInput(i, None, t, None, None, "en", False, "Latin") for i, t in enumerate(texts)
    )
    return ProbePlan(
        inputs,
        (),
        tuple(
            Sample(0, input_index, 0, text, None, changed, skipped)
            for input_index, text, changed, skipped in samples
        ),
        seed=0,
    )


def test_token_ids_are_unpadded() -> None:
    ids = token_ids(tokenizer(), [("the cat", None), ("the dog runs", None)], chunk=8)
    assert ids == [(2, 3), (2, 5, 6)]


def test_noops_are_edits_the_model_cannot_see() -> None:
    probe = plan(
        ["the cat sleeps", "the dog runs a"],
        [
            (0, "the  cat sleeps", True, None),  # extra space: the pre-tokenizer drops it
            (0, "ｔｈｅ cat sleeps", True, None),  # fullwidth: NFKC folds it
            (0, "the cat runs", True, None),  # a real edit
            (1, "the dog runs a", False, None),  # unchanged text: no encoding needed
            (1, "the dog runs", True, "unsupported script"),  # skipped, not a no-op
        ],
    )
    ids = tokenizer()
    assert noop_flags(probe, lambda p: token_ids(ids, p, chunk=2)) == (
        True,
        True,
        False,
        True,
        False,
    )


def test_an_edit_past_the_max_length_is_a_noop() -> None:
    probe = plan(["the cat sleeps the dog"], [(0, "the cat sleeps the cat", True, None)])
    assert noop_flags(probe, lambda p: token_ids(tokenizer(max_length=3), p, chunk=4)) == (True,)
    assert noop_flags(probe, lambda p: token_ids(tokenizer(max_length=8), p, chunk=4)) == (False,)


def test_visible_samples_and_evaluation_counts_leave_out_skips_and_noops() -> None:
    probe = plan(
        ["the cat", "the dog"],
        [
            (0, "a cat", True, None),
            (0, "x", True, "skip"),
            (1, "the dog", False, None),
            (1, "a dog", True, None),
        ],
    )
    noop = (False, False, True, False)
    assert visible(probe, noop, range(4)) == [0, 3]
    assert visible(probe, noop, range(2, 4)) == [3]
    assert evaluations(probe, noop) == 2 + 2


def test_batches_are_length_sorted_and_results_come_back_in_order() -> None:
    pairs: list[TextPair] = [("ccc", None), ("a", "b"), ("bbbbbb", None), ("d", None)]
    batches: list[list[TextPair]] = []
    done: list[int] = []

    def score(chunk: list[TextPair]) -> list[Scored]:
        batches.append(list(chunk))
        return [Scored(text, (1.0,)) for text, _ in chunk]

    async def main() -> list[Scored]:
        return await score_in_batches(pairs, score, 2, anyio.CapacityLimiter(1), done.append)

    result = anyio.run(main)
    assert [s.label for s in result] == ["ccc", "a", "bbbbbb", "d"]
    assert batches == [[("d", None), ("a", "b")], [("ccc", None), ("bbbbbb", None)]]
    assert done == [2, 2]


def test_gauges_hold_the_latest_flip_rate_and_accuracy_change() -> None:
    metrics = ServiceMetrics()

    def estimate(value: float | None) -> Interval:
        return Interval(estimate=value, ci_low=None, ci_high=None, n=1, method="wilson")

    publish_gauges(metrics, "demo", [("char_swap", 0.1, "de", estimate(0.25), estimate(-0.1))])
    publish_gauges(metrics, "demo", [("char_swap", 0.1, "de", estimate(0.5), estimate(None))])
    samples = {
        (s.name, s.labels["lang"]): s.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for s in family.samples
        if s.name.startswith("polyprobe_probe_")
    }
    assert samples == {
        ("polyprobe_probe_flip_rate", "de"): 0.5,
        ("polyprobe_probe_accuracy_delta", "de"): -0.1,
    }
