"""Black-box adversarial search: the smallest word-level edit that flips a model's prediction.

The model is any callable from a batch of `(text, text_pair)` to per-label probabilities; the
search sees nothing else (no gradients, no logits, no tokenizer, unless an `encode` function is
given to skip edits the tokenizer would erase). Per input it

1. asks for the clean prediction (query 1) and the prediction with each word deleted
   (leave-one-out, one batch): a word matters as much as deleting it lowers the probability of
   the predicted label;
2. walks the words from the most to the least important, and for each tries one-unit edits from
   the perturbation families in the order given (character edits first, then keyboard typos,
   confusables, diacritics...), all candidates of a word in one batch. A flip ends the walk;
   otherwise the candidate that lowered the predicted label's probability most is kept and the
   next word is tried (greedy, as TextFooler and DeepWordBug do);
3. after a flip, puts back every edited word whose edit is not needed for the flip, so the edit
   returned is minimal in the sense that no word of it can be undone (1-minimal).

Every model query counts against the per-input budget, the clean one included; the search stops
when the budget is spent and reports what it used. Words come from `segment.tokenize`, so CJK and
Thai fall back to one grapheme cluster per word. Candidates are drawn with the same derived,
seeded streams as `apply_perturbation`, so a search is repeatable from its seed in any batch.

Many searches advance in lockstep (`Lockstep`): each step gathers the queries of every unfinished
search into one batch, which is where a served model gets its throughput.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from robustness.apply import Target, derive_rng, example_key
from robustness.rand import edit_count
from robustness.registry import (
    Family,
    PerturbationSpecError,
    TextPerturbation,
    UnknownFamilyError,
    UnsupportedScriptError,
    all_families,
    check_script,
    get_family,
)
from robustness.scripts import dominant_script
from robustness.segment import Token, tokenize

__all__ = [
    "ATTACK_NAME",
    "ATTACK_VERSION",
    "DEFAULT_EDITS",
    "AttackConfig",
    "AttackInput",
    "AttackResult",
    "Lockstep",
    "StopReason",
    "WordEdit",
    "allowed_edit_families",
    "check_config",
    "run_attacks",
    "search",
]

ATTACK_NAME = "attack"
# Bump whenever the search can return a different edit for the same seed and model.
ATTACK_VERSION = "1"
DEFAULT_EDITS: tuple[str, ...] = (
    "char_swap",
    "char_delete",
    "char_insert",
    "char_substitute",
    "keyboard_typo",
    "homoglyph",
    "diacritic_removal",
    "diacritic_addition",
)
# Any positive severity edits at least one unit (`rand.edit_count`): this one edits exactly one.
_ONE_UNIT = 1e-9

Field = Literal["text", "text_pair"]
TextPair = tuple[str, str | None]
Probabilities = Sequence[Sequence[float]]
Model = Callable[[Sequence[TextPair]], Probabilities]
Encode = Callable[[Sequence[TextPair]], Sequence[Hashable]]
StopReason = Literal["flipped", "budget", "exhausted", "max_words", "no_words"]
# What a search yields (queries) and is sent back (one probability row per query).
Search = Generator[list[TextPair], Probabilities, "AttackResult"]


@dataclass(frozen=True)
class AttackConfig:
    """How hard to search. `max_word_share` plays the role of severity: the largest share of
    words (ceil, at least one) an edit may change; 0 allows none."""

    query_budget: int = 200
    max_word_share: float = 0.3
    edits: tuple[str, ...] = DEFAULT_EDITS
    candidates_per_family: int = 1
    target: Target = "both"
    seed: int = 0


@dataclass(frozen=True)
class AttackInput:
    text: str
    text_pair: str | None = None
    lang: str | None = None
    example_id: str | int | None = None


@dataclass(frozen=True)
class WordEdit:
    field: Field
    start: int  # character offset of the word in the original field
    original: str
    edited: str
    family: str


@dataclass(frozen=True)
class AttackResult:
    success: bool
    text: str
    text_pair: str | None
    edits: tuple[WordEdit, ...]  # in text order
    queries: int
    words: int  # words the search could edit (after the target and script filters)
    original_label: int
    original_probability: float  # of original_label, on the clean input
    final_label: int
    final_probability: float  # of original_label, on the returned text
    final_probabilities: tuple[float, ...]  # every label's, on the returned text
    stop: StopReason


def allowed_edit_families() -> list[str]:
    """Families an attack may draw edits from: label-preserving text families."""
    return [f.name for f in all_families() if f.kind == "text" and f.label_preserving]


def check_config(config: AttackConfig) -> list[Family]:
    """The edit families of `config`, or a PerturbationSpecError naming the bad field."""
    if not 0.0 <= config.max_word_share <= 1.0:  # also refuses NaN
        raise PerturbationSpecError(
            f"severity for family {ATTACK_NAME!r} must be a number in [0, 1]; it is the "
            f"largest share of words an edit may change (0 allows none), got "
            f"{config.max_word_share!r}",
            field="severity",
            allowed=["0 <= severity <= 1"],
            got=config.max_word_share,
        )
    if config.query_budget < 2:
        raise PerturbationSpecError(
            f"query_budget of an attack must be at least 2 (the clean query and one more), "
            f"got {config.query_budget}",
            field="query_budget",
            allowed=[">= 2"],
            got=config.query_budget,
        )
    if config.candidates_per_family < 1:
        raise PerturbationSpecError(
            f"an attack needs at least one candidate per family and word, got "
            f"{config.candidates_per_family}",
            field="samples",
            allowed=[">= 1"],
            got=config.candidates_per_family,
        )
    if not config.edits:
        raise PerturbationSpecError(
            "an attack needs at least one edit family",
            field="edits",
            allowed=allowed_edit_families(),
            got=[],
        )
    allowed = allowed_edit_families()
    families = []
    for name in config.edits:
        try:
            family = get_family(name)
        except UnknownFamilyError as error:
            raise PerturbationSpecError(
                f"edits: {error}", field="edits", allowed=allowed, got=name
            ) from None
        if name not in allowed:
            raise PerturbationSpecError(
                f"edits: family {name!r} cannot be an attack edit: an attack edits one word "
                f"at a time and must keep the label; use label-preserving text families: "
                f"{', '.join(allowed)}",
                field="edits",
                allowed=allowed,
                got=name,
            )
        if family in families:
            raise PerturbationSpecError(
                f"edits: family {name!r} is listed twice", field="edits", allowed=allowed, got=name
            )
        families.append(family)
    return families


@dataclass
class _Word:
    field: Field
    token: int  # index into the field's tokens
    start: int
    text: str
    importance: float | None = None  # probability drop when deleted; None when not measured


@dataclass
class _State:
    """The search's current text: per field, its tokens with some replaced."""

    tokens: dict[Field, list[Token]]
    replaced: dict[tuple[Field, int], tuple[str, str]] = field(default_factory=dict)

    def render(self, overrides: dict[tuple[Field, int], str] | None = None) -> dict[Field, str]:
        overrides = overrides or {}
        out: dict[Field, str] = {}
        for name, tokens in self.tokens.items():
            parts = []
            for i, token in enumerate(tokens):
                key = (name, i)
                if key in overrides:
                    parts.append(overrides[key])
                elif key in self.replaced:
                    parts.append(self.replaced[key][0])
                else:
                    parts.append(token.text)
            out[name] = "".join(parts)
        return out


def _pair(item: AttackInput, rendered: dict[Field, str]) -> TextPair:
    pair = rendered.get("text_pair", item.text_pair)
    return (rendered.get("text", item.text), pair)


def _fields(item: AttackInput, target: Target) -> list[Field]:
    if item.text_pair is None or target == "text":
        return ["text"]
    if target == "text_pair":
        return ["text_pair"]
    return ["text", "text_pair"]


def _words(item: AttackInput, tokens: dict[Field, list[Token]]) -> list[_Word]:
    words = []
    for name, field_tokens in tokens.items():
        start = 0
        for i, token in enumerate(field_tokens):
            if token.is_word:
                words.append(_Word(name, i, start, token.text))
            start += len(token.text)
    return words


def _argmax(row: Sequence[float]) -> int:
    best = 0
    for i, value in enumerate(row):
        if value > row[best]:
            best = i
    return best


def _usable(families: Sequence[Family], lang: str | None) -> list[Family]:
    usable = []
    for family in families:
        try:
            check_script(family, lang=lang)
        except UnsupportedScriptError:
            continue
        usable.append(family)
    return usable


def _candidates(
    word: _Word, families: Sequence[Family], item: AttackInput, config: AttackConfig
) -> list[tuple[str, str]]:
    """(edited word, family name) in family order, each edit of one unit, duplicates dropped."""
    key = example_key(item.text, item.text_pair, item.example_id)
    script = dominant_script(word.text)
    seen = {word.text}
    out = []
    for family in families:
        if not family.supports_script(script):
            continue
        function: TextPerturbation = family.function  # type: ignore[assignment]
        for sample in range(config.candidates_per_family):
            stream = f"attack:{word.field}:{word.token}"
            rng = derive_rng(config.seed, key, family, sample, stream)
            edited = function(word.text, rng, _ONE_UNIT, item.lang)
            if edited not in seen:
                seen.add(edited)
                out.append((edited, family.name))
    return out


def search(
    item: AttackInput,
    config: AttackConfig,
    families: Sequence[Family],
    encode: Encode | None = None,
) -> Search:
    """One input's search as a generator: it yields batches of queries and is sent back their
    probabilities, and returns the AttackResult. Drive it with `Lockstep` or `run_attacks`."""
    budget = config.query_budget
    used = 0
    fields = _fields(item, config.target)
    state = _State({name: tokenize(getattr(item, name)) for name in fields})
    words = _words(item, state.tokens)

    (clean,) = yield [(item.text, item.text_pair)]
    used += 1
    label = _argmax(clean)
    original_p = float(clean[label])
    current_p = original_p

    def result(success: bool, stop: StopReason, final: Sequence[float]) -> AttackResult:
        rendered = state.render()
        edits = tuple(
            WordEdit(w.field, w.start, w.text, state.replaced[(w.field, w.token)][0],
                     state.replaced[(w.field, w.token)][1])
            for w in words
            if (w.field, w.token) in state.replaced
        )  # fmt: skip
        return AttackResult(
            success=success,
            text=rendered.get("text", item.text),
            text_pair=rendered.get("text_pair", item.text_pair),
            edits=edits,
            queries=used,
            words=len(words),
            original_label=label,
            original_probability=original_p,
            final_label=_argmax(final),
            final_probability=float(final[label]),
            final_probabilities=tuple(float(p) for p in final),
            stop=stop,
        )

    usable = _usable(families, item.lang)
    max_words = edit_count(config.max_word_share, len(words))
    if not words or not usable:
        return result(False, "no_words", clean)
    if max_words == 0:
        return result(False, "max_words", clean)

    # Leave-one-out, leaving at least one query for an edit; a word whose deletion would empty
    # its field is not measured (an empty sentence is not an input the model is meant for).
    measurable = [w for w in words if state.render({(w.field, w.token): ""})[w.field].strip()][
        : budget - used - 1
    ]
    if measurable:
        rows = yield [_pair(item, state.render({(w.field, w.token): ""})) for w in measurable]
        used += len(measurable)
        for w, row in zip(measurable, rows, strict=True):
            w.importance = original_p - float(row[label])
    order = sorted(
        range(len(words)),
        key=lambda i: (words[i].importance is None, -(words[i].importance or 0.0), i),
    )

    current_row: Sequence[float] = clean
    current_ids = encode([_pair(item, state.render())])[0] if encode is not None else None
    stop: StopReason = "exhausted"
    flipped = False
    for index in order:
        if len(state.replaced) >= max_words:
            stop = "max_words"
            break
        if used >= budget:
            stop = "budget"
            break
        word = words[index]
        key = (word.field, word.token)
        options = _candidates(word, usable, item, config)
        queries = [_pair(item, state.render({key: edited})) for edited, _ in options]
        if encode is not None and options:
            ids = encode(queries)
            kept, seen_ids = [], {current_ids}
            for option, query, token_ids in zip(options, queries, ids, strict=True):
                if token_ids not in seen_ids:
                    seen_ids.add(token_ids)
                    kept.append((option, query))
            options = [o for o, _ in kept]
            queries = [q for _, q in kept]
        room = budget - used
        options, queries = options[:room], queries[:room]
        if not options:
            continue
        rows = yield queries
        used += len(queries)
        flips = [i for i, row in enumerate(rows) if _argmax(row) != label]
        if flips:
            best = flips[0]  # the earliest family in the order given
        else:
            best = min(range(len(rows)), key=lambda i: (float(rows[i][label]), i))
            if float(rows[best][label]) >= current_p:
                continue  # nothing for this word lowers the label: leave it as it is
        state.replaced[key] = options[best]
        current_row = rows[best]
        current_p = float(current_row[label])
        if encode is not None:
            current_ids = encode([queries[best]])[0]
        if flips:
            flipped = True
            break
    else:
        stop = "budget" if used >= budget else "exhausted"

    if not flipped:
        return result(False, stop, current_row)

    # Undo edits the flip does not need, the least important word first.
    for key in sorted(state.replaced, key=lambda k: _rank(order, words, k), reverse=True):
        if len(state.replaced) == 1 or used >= budget:
            break
        undone = state.render({key: _original(state, key)})
        (row,) = yield [_pair(item, undone)]
        used += 1
        if _argmax(row) != label:
            del state.replaced[key]
            current_row = row
    return result(True, "flipped", current_row)


def _rank(order: list[int], words: list[_Word], key: tuple[Field, int]) -> int:
    position = next(i for i, w in enumerate(words) if (w.field, w.token) == key)
    return order.index(position)


def _original(state: _State, key: tuple[Field, int]) -> str:
    return state.tokens[key[0]][key[1]].text


class Lockstep:
    """Many searches advanced together: `queries()` is one batch over every unfinished search,
    `feed()` hands each search its rows. Pure and synchronous: the caller does the scoring."""

    def __init__(self, searches: Sequence[Search]) -> None:
        self._searches = list(searches)
        self._pending: dict[int, list[TextPair]] = {}
        self._results: list[AttackResult | None] = [None] * len(self._searches)
        for i in range(len(self._searches)):
            self._advance(i, None)

    @property
    def done(self) -> bool:
        return not self._pending

    def queries(self) -> list[TextPair]:
        return [q for i in sorted(self._pending) for q in self._pending[i]]

    def feed(self, rows: Probabilities) -> None:
        """Probabilities for `queries()`, in its order."""
        expected = sum(len(q) for q in self._pending.values())
        if len(rows) != expected:
            raise ValueError(f"expected {expected} probability rows, got {len(rows)}")
        offset = 0
        for i in sorted(self._pending):
            n = len(self._pending[i])
            self._advance(i, rows[offset : offset + n])
            offset += n

    def results(self) -> list[AttackResult]:
        """One result per search, in the order given, once every search is done."""
        finished = [r for r in self._results if r is not None]
        if len(finished) != len(self._results):
            raise RuntimeError("some searches are still running")
        return finished

    def _advance(self, i: int, rows: Probabilities | None) -> None:
        running = self._searches[i]
        try:
            self._pending[i] = next(running) if rows is None else running.send(rows)
        except StopIteration as stop:
            self._pending.pop(i, None)
            self._results[i] = stop.value


def run_attacks(
    items: Sequence[AttackInput],
    model: Model,
    config: AttackConfig,
    encode: Encode | None = None,
) -> list[AttackResult]:
    """Attack every input with `model`, one model call per lockstep round."""
    families = check_config(config)
    lockstep = Lockstep([search(item, config, families, encode) for item in items])
    while not lockstep.done:
        lockstep.feed(model(lockstep.queries()))
    return lockstep.results()
