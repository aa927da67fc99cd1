"""Training recipes: a validated description of one STILTs (or direct) experiment.

A recipe is YAML or TOML. Every section is a strict pydantic model, so a misspelt key is an error
that names the key instead of a setting that silently does nothing. `--set a.b=value` overrides
are applied to the raw mapping before validation, so they are checked exactly like the file.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class RecipeError(ValueError):
    """A recipe that cannot be used, with a message that says what to change."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IdRange(_Strict):
    """Row ids `start <= id < stop` (ids are parallel across the languages of a split)."""

    start: int = Field(ge=0)
    stop: int = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> IdRange:
        if self.stop <= self.start:
            raise ValueError(f"ids: stop ({self.stop}) must be greater than start ({self.start})")
        return self

    def __contains__(self, item: object) -> bool:
        return isinstance(item, int) and self.start <= item < self.stop

    def describe(self) -> str:
        return f"{self.start}-{self.stop - 1}"


class DataSlice(_Strict):
    """Where examples come from: local JSONL (`path`: a directory of `<lang>.jsonl` or one file)
    or a Hugging Face dataset (`hub`, `hub_config`, `split`), restricted to `ids` and `limit`."""

    path: Path | None = None
    hub: str | None = None
    hub_config: str | None = None
    split: str = "train"
    languages: tuple[str, ...] = ("en",)
    ids: IdRange | None = None
    limit: int | None = Field(default=None, gt=0)
    fields: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_source(self) -> DataSlice:
        if (self.path is None) == (self.hub is None):
            raise ValueError("give exactly one of `path` (local JSONL) or `hub` (dataset id)")
        if not self.languages:
            raise ValueError("languages is empty: name at least one language code")
        return self

    def corpus_key(self) -> str:
        """Identifies the parallel corpus: slices with the same key are translations of each other."""
        if self.path is not None:
            base = self.path if self.path.suffix != ".jsonl" else self.path.parent
            return f"local:{base.resolve()}"
        return f"hub:{self.hub}:{self.split}"


class TaskData(_Strict):
    """One task of a phase: its registry name, its training data and its English dev data."""

    task: str
    train: DataSlice
    dev: DataSlice | None = None


class Augmentation(_Strict):
    """Perturb a fraction of training inputs with `robustness/` families (adversarial augmentation)."""

    families: tuple[str, ...] = ("char_swap", "char_delete", "keyboard_typo")
    fraction: float = Field(default=0.2, gt=0.0, le=1.0)
    severity: float = Field(default=0.1, gt=0.0, le=1.0)


class Phase(_Strict):
    """Hyperparameters and data of one phase (intermediate or target)."""

    tasks: tuple[TaskData, ...] = Field(min_length=1)
    sampling: Literal["proportional", "capped", "temperature"] = "proportional"
    sampling_cap: int | None = Field(default=None, gt=0)
    sampling_temperature: float = Field(default=2.0, gt=0.0)
    lr: float = Field(default=3e-5, gt=0.0)
    epochs: float = Field(default=3.0, gt=0.0)
    effective_batch: int = Field(default=16, gt=0)
    per_device_batch: int | None = Field(default=None, gt=0)
    max_length: int = Field(default=128, ge=8, le=512)
    warmup_ratio: float = Field(default=0.1, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=0.01, ge=0.0)
    eval_every_steps: int | None = Field(default=None, gt=0)
    patience: int | None = Field(default=None, gt=0)
    selection: Literal["best_dev", "last"] = "best_dev"
    freeze_word_embeddings: bool = True
    # Batches of similar length (from shuffled pools of 50 batches): far less padding on CPU.
    group_by_length: bool = True
    augmentation: Augmentation | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Phase:
        if self.sampling == "capped" and self.sampling_cap is None:
            raise ValueError("sampling 'capped' needs sampling_cap (examples per task per epoch)")
        if self.selection == "best_dev" and any(t.dev is None for t in self.tasks):
            missing = [t.task for t in self.tasks if t.dev is None]
            raise ValueError(
                f"selection 'best_dev' needs a dev slice for every task (missing for {missing});"
                " add `dev:` or set selection: last"
            )
        if self.patience is not None and self.selection != "best_dev":
            raise ValueError("patience (early stopping) needs selection: best_dev")
        return self


class Evaluation(_Strict):
    """Zero-shot evaluation of the target task in several languages on held-out ids."""

    data: DataSlice
    select_on_target_languages: bool = False


class Recipe(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    base_model: str
    data_root: Path = Path()
    seeds: tuple[int, ...] = Field(default=(0,), min_length=1)
    output_dir: Path
    intermediate: Phase | None = None
    target: Phase
    evaluation: Evaluation
    lora_rank: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _target_is_single_task(self) -> Recipe:
        if len(self.target.tasks) != 1:
            raise ValueError("the target phase trains exactly one task")
        return self

    @property
    def is_stilts(self) -> bool:
        return self.intermediate is not None


def _parse_text(text: str, suffix: str) -> Any:
    if suffix == ".toml":
        return tomllib.loads(text)
    return yaml.safe_load(text)


def parse_override(assignment: str) -> tuple[list[str], Any]:
    """`target.lr=2e-5` -> (["target", "lr"], 2e-05); the value is read as YAML."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"override {assignment!r} is not KEY=VALUE (e.g. target.lr=2e-5)")
    return key.strip().split("."), yaml.safe_load(raw)


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of `raw` with dotted-key overrides; list items are addressed by index."""
    result: Any = _deep_copy(raw)
    for assignment in overrides:
        path, value = parse_override(assignment)
        node = result
        for depth, part in enumerate(path[:-1]):
            node = _child(node, part, path[: depth + 1], assignment)
        last = path[-1]
        if isinstance(node, list):
            node[_index(node, last, assignment)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise RecipeError(f"override {assignment!r}: {'.'.join(path[:-1])} is not a section")
    return dict(result)


def _child(node: Any, part: str, where: list[str], assignment: str) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, assignment)]
    if not isinstance(node, dict):
        raise RecipeError(f"override {assignment!r}: {'.'.join(where[:-1])} is not a section")
    if node.get(part) is None:
        node[part] = {}
    return node[part]


def _index(items: list[Any], part: str, assignment: str) -> int:
    if not part.isdigit() or int(part) >= len(items):
        raise RecipeError(f"override {assignment!r}: {part!r} is not an index below {len(items)}")
    return int(part)


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def _resolve_paths(raw: dict[str, Any]) -> dict[str, Any]:
    """Relative data `path`s are relative to `data_root` (itself relative to the working directory)."""
    root = Path(str(raw.get("data_root", ".")))

    def visit(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: (
                    str(root / v)
                    if k == "path" and isinstance(v, str) and not Path(v).is_absolute()
                    else visit(v)
                )
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [visit(v) for v in node]
        return node

    resolved: dict[str, Any] = visit(raw)
    return resolved


def format_validation_error(source: str, error: ValidationError) -> str:
    lines = [f"{source}: {error.error_count()} problem(s)"]
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = (
            "unknown key: remove it or check its spelling"
            if item["type"] == "extra_forbidden"
            else item["msg"]
        )
        lines.append(f"  {where}: {message}")
    return "\n".join(lines)


def recipe_from_mapping(raw: Mapping[str, Any], *, source: str = "recipe") -> Recipe:
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        raise RecipeError(format_validation_error(source, exc)) from exc


def load_recipe_mapping(path: Path) -> dict[str, Any]:
    if path.suffix not in {".yaml", ".yml", ".toml"}:
        raise RecipeError(f"{path}: a recipe is a .yaml, .yml or .toml file")
    try:
        raw = _parse_text(path.read_text(encoding="utf-8"), path.suffix)
    except (OSError, yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise RecipeError(f"{path}: cannot read recipe: {exc}") from exc
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of sections, got {type(raw).__name__}")
    return raw


def load_recipe(path: Path, overrides: Sequence[str] = ()) -> tuple[Recipe, dict[str, Any]]:
    """The validated recipe and the resolved mapping it came from (recorded in the manifest)."""
    resolved = _resolve_paths(apply_overrides(load_recipe_mapping(path), overrides))
    return recipe_from_mapping(resolved, source=str(path)), resolved
