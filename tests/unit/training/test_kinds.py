"""Each task kind on its fixture: parsing, batch shapes, a finite loss, and exact metrics."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.unit.training_helpers import FIXTURES
from training.kinds import KINDS, check_target_task, get_kind
from training.kinds.extractive_qa import (
    SpanPrediction,
    _best_spans,
    answer_text,
    normalize_answer,
    squad_scores,
    token_f1,
)
from training.kinds.multiple_choice import choice_index
from training.kinds.token_tagging import IGNORE, bio_spans, entity_f1, token_accuracy
from training.model import load_encoder, load_tokenizer
from training.recipe import DataSlice
from training.tasks import Example, TaskError, TaskSpec, get_task, load_examples


def _load(task: str, folder: str, **slice_args: Any) -> tuple[TaskSpec, list[Example]]:
    spec = get_task(task)
    data = DataSlice(path=FIXTURES / folder, **slice_args)
    return spec, load_examples(spec, data, get_kind(spec.kind).parse)


def _run(spec: TaskSpec, examples: list[Example], model_dir: Path, max_length: int = 64) -> Any:
    kind = get_kind(spec.kind)
    tokenizer = load_tokenizer(model_dir)
    encoder = load_encoder(model_dir)
    head = kind.build_head(spec, encoder.config)
    batch = kind.collate(spec, examples, tokenizer, max_length)
    return batch, kind.forward(encoder, head, batch)


def test_every_kind_is_registered_and_tasks_name_known_kinds() -> None:
    assert set(KINDS) == {"classification", "multiple_choice", "extractive_qa", "token_tagging"}
    for name in ("hellaswag", "cosmosqa", "commonsenseqa", "squad", "squad_v2"):
        assert get_task(name).kind in KINDS
    assert get_task("conll2003_ner").hub == "eriktks/conll2003"
    assert get_task("ud_pos").hub_config == "en_ewt"


def test_only_classification_can_be_a_target() -> None:
    check_target_task("pawsx")
    with pytest.raises(TaskError, match="target phase must be a classification task"):
        check_target_task("squad")


# --- classification ---------------------------------------------------------------------------


def test_classification_batch_and_loss(tiny_xlmr: Path) -> None:
    spec, examples = _load("pawsx", "pawsx", languages=("en", "de"), limit=3)
    batch, out = _run(spec, examples, tiny_xlmr)
    assert batch["input_ids"].shape[0] == 6 and batch["labels"].tolist() == [1, 0, 1] * 2
    assert out.losses.shape == (6,) and torch.isfinite(out.losses).all()
    assert all(p in (0, 1) for p in out.predictions)


# --- multiple choice ---------------------------------------------------------------------------


def test_multiple_choice_parses_hub_layouts() -> None:
    kind = get_kind("multiple_choice")
    cosmos = get_task("cosmosqa")
    row = {"context": "It rained.", "question": "Why wet?", "label": 2}
    row |= {f"answer{i}": f"a{i}" for i in range(4)}
    example = kind.parse(cosmos, cosmos.fields, row, 0, "en")
    assert example.features == {
        "context": "It rained. Why wet?",
        "choices": ("a0", "a1", "a2", "a3"),
    }
    assert example.label == 2
    csqa = get_task("commonsenseqa")
    row = {"question": "Q?", "choices": {"label": ["A", "B", "C"], "text": ["x", "y", "z"]}}
    example = kind.parse(csqa, csqa.fields, {**row, "answerKey": "C"}, 1, "en")
    assert example.features["choices"] == ("x", "y", "z") and example.label == 2
    assert choice_index("1", 4, "w") == 1
    with pytest.raises(TaskError, match="not a choice among 3"):
        choice_index("D", 3, "w")


def test_multiple_choice_batch_masks_missing_choices(tiny_xlmr: Path) -> None:
    spec, examples = _load("hellaswag", "hellaswag", limit=3)
    short = Example(99, "en", {"context": "A dog", "choices": ("barks.", "flies.")}, 1)
    batch, out = _run(spec, [*examples, short], tiny_xlmr)
    assert batch["input_ids"].shape[:2] == (4, 4)
    assert batch["choice_mask"].tolist()[3] == [True, True, False, False]
    assert batch["labels"].tolist() == [0, 1, 2, 1]
    assert torch.isfinite(out.losses).all() and out.predictions[3] in (0, 1)


def test_multiple_choice_accuracy() -> None:
    kind = get_kind("multiple_choice")
    spec = get_task("hellaswag")
    examples = [Example(i, "en", {}, label) for i, label in enumerate([0, 3, 1, 1])]
    assert kind.score(spec, examples, [0, 3, 2, 0]) == 0.5


# --- extractive QA -----------------------------------------------------------------------------


def test_squad_normalisation_and_scores() -> None:
    assert normalize_answer("The  Cat, sat!") == "cat sat"
    assert token_f1("the cat sat", "cat sat on a mat") == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0
    scores = squad_scores(
        ["Marie Curie", "in 1889", "", "four strings"],
        [["Marie Curie"], ["1889", "in 1889!"], [], ["four"]],
    )
    assert scores["exact_match"] == pytest.approx(3 / 4)
    assert scores["f1"] == pytest.approx((1 + 1 + 1 + 2 / 3) / 4)


def test_qa_labels_point_at_the_answer(tiny_xlmr: Path) -> None:
    spec, examples = _load("squad_v2", "squad_v2")
    batch, out = _run(spec, examples, tiny_xlmr)
    for row, example in enumerate(examples):
        start, end = int(batch["start_positions"][row]), int(batch["end_positions"][row])
        if not example.label.texts:
            assert (start, end) == (0, 0)
            continue
        offsets = batch["offsets"][row]
        span = example.features["context"][int(offsets[start][0]) : int(offsets[end][1])]
        assert span.strip() == example.label.texts[0]
    assert out.losses.shape == (len(examples),) and torch.isfinite(out.losses).all()
    assert all(isinstance(p, SpanPrediction) for p in out.predictions)


def test_qa_answer_outside_the_window_is_no_answer(tiny_xlmr: Path) -> None:
    spec, examples = _load("squad", "squad")
    late = next(e for e in examples if e.label.starts[0] > 40)
    batch, _ = _run(spec, [late], tiny_xlmr, max_length=24)
    assert (int(batch["start_positions"][0]), int(batch["end_positions"][0])) == (0, 0)


def test_best_span_search_and_no_answer() -> None:
    start = torch.tensor([[5.0, 0.0, 3.0, 1.0, 0.0, 0.0], [0.0, 0.0, 4.0, 0.0, 0.0, 0.0]])
    end = torch.tensor([[5.0, 0.0, 0.0, 2.0, 9.0, 0.0], [0.0, 4.0, 0.0, 1.0, 0.0, 0.0]])
    context = torch.tensor([[False, False, True, True, True, False]] * 2)
    offsets = torch.tensor([[[0, 0], [0, 3], [0, 4], [5, 9], [10, 14], [0, 0]]] * 2)
    spans = _best_spans(start, end, {"context_mask": context, "offsets": offsets})
    # Row 0: best span 2..4 (3 + 9 = 12) beats <s> (10). Row 1: end 1 is before every start in
    # the context, so the best valid span is 2..3 (4 + 1 = 5), and <s> (0) loses.
    assert spans[0] == SpanPrediction(0, 14, no_answer=False)
    assert spans[1] == SpanPrediction(0, 9, no_answer=False)
    start[0, 0] = 20.0
    spans = _best_spans(start, end, {"context_mask": context, "offsets": offsets})
    assert spans[0].no_answer and (spans[0].start, spans[0].end) == (0, 14)
    assert answer_text("abcdefghijklmnop", spans[0], allow_none=True) == ""
    assert answer_text("abcdefghijklmnop", spans[0], allow_none=False) == "abcdefghijklmn"


def test_qa_score_v1_always_answers_v2_may_abstain() -> None:
    kind = get_kind("extractive_qa")
    context = "Tokyo became the capital in 1868."
    answered = Example(0, "en", {"question": "q", "context": context}, _answers(["1868"], [28]))
    unanswerable = Example(1, "en", {"question": "q", "context": context}, _answers([], []))
    predictions = [SpanPrediction(28, 32, no_answer=True), SpanPrediction(0, 5, no_answer=True)]
    v2 = kind.score(get_task("squad_v2"), [answered, unanswerable], predictions)
    assert v2 == pytest.approx(0.5)
    v1 = kind.score(get_task("squad"), [answered], predictions[:1])
    assert v1 == 1.0


def _answers(texts: list[str], starts: list[int]) -> Any:
    from training.kinds.extractive_qa import Answers

    return Answers(tuple(texts), tuple(starts))


def test_qa_rejects_misplaced_answers() -> None:
    kind = get_kind("extractive_qa")
    spec = get_task("squad")
    row = {"question": "q", "context": "abc def", "answers": {"text": ["def"], "answer_start": [0]}}
    with pytest.raises(TaskError, match="not at character 0"):
        kind.parse(spec, spec.fields, row, 3, "en")
    row["answers"] = {"text": [], "answer_start": []}
    with pytest.raises(TaskError, match="no unanswerable class"):
        kind.parse(spec, spec.fields, row, 3, "en")


# --- token tagging -----------------------------------------------------------------------------


def test_tagging_labels_sit_on_first_sub_tokens(tiny_xlmr: Path) -> None:
    spec, examples = _load("conll2003_ner", "conll2003_ner")
    batch, out = _run(spec, examples, tiny_xlmr)
    tokenizer = load_tokenizer(tiny_xlmr)
    for row, example in enumerate(examples):
        labelled = batch["labels"][row][batch["labels"][row] != IGNORE].tolist()
        assert labelled == list(example.label)
        word_ids = tokenizer(list(example.features["tokens"]), is_split_into_words=True).word_ids()
        firsts = [i for i, w in enumerate(word_ids) if w is not None and w != word_ids[i - 1]]
        assert (batch["labels"][row] != IGNORE).nonzero().flatten().tolist() == firsts
        assert len(out.predictions[row]) == len(example.features["tokens"])
    assert torch.isfinite(out.losses).all()


def test_tagging_truncated_words_are_errors(tiny_xlmr: Path) -> None:
    spec, examples = _load("ud_pos", "ud_pos", limit=1)
    batch, out = _run(spec, examples, tiny_xlmr, max_length=5)
    words = len(examples[0].features["tokens"])
    kept = int((batch["labels"][0] != IGNORE).sum())
    assert kept < words
    assert out.predictions[0][kept:] == [-1] * (words - kept)
    assert examples[0].label[:2] == (spec.labels.index("DET"), spec.labels.index("NOUN"))


def test_bio_spans_and_entity_f1() -> None:
    tags = ["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-ORG", "I-PER", "B-LOC"]
    assert bio_spans(tags) == {
        (0, 2, "PER"),
        (3, 5, "LOC"),
        (5, 6, "ORG"),
        (6, 7, "PER"),
        (7, 8, "LOC"),
    }
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "O", "O", "B-LOC"], ["B-ORG", "B-MISC"]]
    # tp = LOC + ORG = 2, fp = PER(0,1) + MISC = 2, fn = PER(0,2) = 1 -> 4 / 7
    assert entity_f1(gold, pred) == pytest.approx(4 / 7)
    assert token_accuracy([[1, 2, 3], [4]], [[1, 0, 3], [-1]]) == pytest.approx(2 / 4)


def test_tagging_score_uses_the_task_metric() -> None:
    kind = get_kind("token_tagging")
    ner = get_task("conll2003_ner")
    example = Example(0, "en", {"tokens": ("A", "B", "c")}, (1, 2, 0))
    assert kind.score(ner, [example], [[1, 2, 0]]) == 1.0
    assert kind.score(ner, [example], [[1, -1, 0]]) == 0.0
    pos = get_task("ud_pos")
    assert kind.score(pos, [example], [[1, -1, 0]]) == pytest.approx(2 / 3)
    assert math.isclose(kind.score(pos, [example], [[0, 0, 0]]), 1 / 3)
