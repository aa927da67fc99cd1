"""The task registry: what each task's rows look like, its labels, head kind, metric and hub id.

A task names a *kind* (training/kinds/) that knows how to tokenize its examples, build its head
and score predictions. Loaders read local JSONL (../shared/data works as-is) or, where a network
exists, the Hugging Face hub via `datasets`. `fields` maps the kind's canonical field names to a
source's column names and can be overridden per data slice in a recipe.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.recipe import DataSlice, IdRange


class TaskError(ValueError):
    """A task or its data cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class Example:
    """One row: `id` is its position in the source (parallel across languages), `lang` its language."""

    id: int
    lang: str
    features: Mapping[str, Any]
    label: Any


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str
    description: str
    labels: tuple[str, ...] = ()
    fields: Mapping[str, str] = field(default_factory=dict)
    hub: str | None = None
    # How a hub dataset's config is chosen: None (one config), or a template using {lang}.
    hub_config: str | None = None
    metric: str = "accuracy"

    def label_index(self, raw: Any) -> int:
        """Labels may be stored as names or as indices into `labels`."""
        if isinstance(raw, bool) or raw is None:
            raise TaskError(f"task {self.name}: label {raw!r} is neither a name nor an index")
        if isinstance(raw, int):
            if 0 <= raw < len(self.labels):
                return raw
            raise TaskError(
                f"task {self.name}: label index {raw} is outside 0..{len(self.labels) - 1}"
            )
        text = str(raw)
        if text in self.labels:
            return self.labels.index(text)
        if text.isdigit() and int(text) < len(self.labels):
            return int(text)
        raise TaskError(f"task {self.name}: label {raw!r} is not one of {list(self.labels)}")


_PAIR = {"text": "sentence1", "text_pair": "sentence2", "label": "label"}
_NLI = {"text": "premise", "text_pair": "hypothesis", "label": "label"}
_NLI_LABELS = ("entailment", "neutral", "contradiction")
# Label orders are the hub datasets' ClassLabel orders, so their integer tags index these tuples.
_CONLL_NER_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
_UPOS_LABELS = (
    "NOUN", "PUNCT", "ADP", "NUM", "SYM", "SCONJ", "ADJ", "PART", "DET",
    "CCONJ", "PROPN", "PRON", "X", "_", "ADV", "INTJ", "VERB", "AUX",
)  # fmt: skip

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            "pawsx",
            "classification",
            "PAWS-X paraphrase identification",
            ("not_paraphrase", "paraphrase"),
            _PAIR,
            hub="paws-x",
            hub_config="{lang}",
        ),
        TaskSpec(
            "xnli",
            "classification",
            "XNLI natural language inference",
            _NLI_LABELS,
            _NLI,
            hub="xnli",
            hub_config="{lang}",
        ),
        TaskSpec(
            "mnli",
            "classification",
            "MultiNLI (English)",
            _NLI_LABELS,
            _NLI,
            hub="nyu-mll/multi_nli",
        ),
        TaskSpec(
            "anli",
            "classification",
            "Adversarial NLI (English)",
            _NLI_LABELS,
            _NLI,
            hub="facebook/anli",
        ),
        TaskSpec(
            "qqp",
            "classification",
            "Quora question pairs (GLUE)",
            ("not_duplicate", "duplicate"),
            {"text": "question1", "text_pair": "question2", "label": "label"},
            hub="nyu-mll/glue",
            hub_config="qqp",
        ),
        TaskSpec(
            "sst2",
            "classification",
            "SST-2 sentiment (GLUE)",
            ("negative", "positive"),
            {"text": "sentence", "label": "label"},
            hub="nyu-mll/glue",
            hub_config="sst2",
        ),
        TaskSpec(
            "hellaswag",
            "multiple_choice",
            "HellaSwag commonsense sentence completion (4 endings)",
            fields={"context": "ctx", "choices": "endings", "label": "label"},
            hub="Rowan/hellaswag",
        ),
        TaskSpec(
            "cosmosqa",
            "multiple_choice",
            "CosmosQA reading comprehension (4 answers)",
            fields={
                "context": "context+question",
                "choices": "answer0+answer1+answer2+answer3",
                "label": "label",
            },
            hub="allenai/cosmos_qa",
        ),
        TaskSpec(
            "commonsenseqa",
            "multiple_choice",
            "CommonsenseQA (5 answers, letter keys)",
            fields={"context": "question", "choices": "choices", "label": "answerKey"},
            hub="tau/commonsense_qa",
        ),
        TaskSpec(
            "squad",
            "extractive_qa",
            "SQuAD v1.1 extractive QA (always answerable)",
            hub="rajpurkar/squad",
            metric="squad",
        ),
        TaskSpec(
            "squad_v2",
            "extractive_qa",
            "SQuAD v2.0 extractive QA (with unanswerable questions)",
            hub="rajpurkar/squad_v2",
            metric="squad_v2",
        ),
        TaskSpec(
            "conll2003_ner",
            "token_tagging",
            "CoNLL-2003 English named entities (BIO tags)",
            _CONLL_NER_LABELS,
            {"tokens": "tokens", "tags": "ner_tags"},
            hub="eriktks/conll2003",
            metric="entity_f1",
        ),
        TaskSpec(
            "ud_pos",
            "token_tagging",
            "Universal Dependencies English EWT part-of-speech tags (UPOS)",
            _UPOS_LABELS,
            {"tokens": "tokens", "tags": "upos"},
            hub="universal_dependencies",
            hub_config="en_ewt",
            metric="token_accuracy",
        ),
    )
}


def register_task(spec: TaskSpec) -> None:
    if spec.name in TASKS:
        raise TaskError(f"task {spec.name!r} is already registered")
    TASKS[spec.name] = spec


def get_task(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except KeyError:
        raise TaskError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}") from None


def _jsonl_rows(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TaskError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise TaskError(f"{path}:{number}: each line must be a JSON object")
            yield row


def _language_file(path: Path, lang: str) -> Path:
    candidate = path if path.suffix == ".jsonl" else path / f"{lang}.jsonl"
    if not candidate.is_file():
        raise TaskError(f"{candidate}: no such JSONL file (data slice for language {lang!r})")
    return candidate


def _hub_rows(spec: TaskSpec, data: DataSlice, lang: str) -> Iterable[Mapping[str, Any]]:
    try:
        import datasets  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise TaskError(
            f"task {spec.name}: reading {data.hub!r} from the hub needs `pip install datasets`"
            " and a network; offline, point the slice's `path` at local JSONL instead"
        ) from exc
    config = data.hub_config or (spec.hub_config.format(lang=lang) if spec.hub_config else None)
    rows: Iterable[Mapping[str, Any]] = datasets.load_dataset(data.hub, config, split=data.split)
    return rows


def _row_id(row: Mapping[str, Any], position: int, *, local: bool) -> int:
    """Local rows carry integer ids (or none: their position). Hub ids are often opaque strings
    (SQuAD's hashes), so hub rows fall back to their position unless the id is an integer."""
    raw = row.get("id")
    if raw is None:
        return position
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.isdigit():
        return int(raw)
    if local:
        raise TaskError(f"row {position}: id {raw!r} is not an integer")
    return position


def _selected(ids: IdRange | None, row_id: int) -> bool:
    return ids is None or row_id in ids


def load_examples(spec: TaskSpec, data: DataSlice, kind_parse: Any) -> list[Example]:
    """Rows of `data` in every language it names, filtered by id range and limit, parsed by the kind.

    Local rows carry their own `id`; hub rows get their position as id (the hub's order is the
    release order, which is what keeps ids parallel across languages).
    """
    fields = {**spec.fields, **data.fields}
    examples: list[Example] = []
    for lang in data.languages:
        if data.path is not None:
            rows: Iterable[Mapping[str, Any]] = _jsonl_rows(_language_file(data.path, lang))
        else:
            rows = _hub_rows(spec, data, lang)
        taken = 0
        for position, row in enumerate(rows):
            row_id = _row_id(row, position, local=data.path is not None)
            if not _selected(data.ids, row_id):
                continue
            examples.append(kind_parse(spec, fields, row, row_id, lang))
            taken += 1
            if data.limit is not None and taken >= data.limit:
                break
        if taken == 0:
            where = data.path if data.path is not None else data.hub
            ids = data.ids.describe() if data.ids else "all"
            raise TaskError(
                f"task {spec.name}: no rows for language {lang!r} in {where} (ids {ids})"
            )
    return examples


def field_value(row: Mapping[str, Any], fields: Mapping[str, str], name: str, where: str) -> Any:
    column = fields.get(name, name)
    if column not in row:
        raise TaskError(
            f"{where}: row has no {column!r} column for {name!r}; columns are {sorted(row)}"
            f" (map it with `fields: {{{name}: <column>}}` in the recipe)"
        )
    return row[column]
