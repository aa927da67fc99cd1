"""The model bundle contract: `bundle.json` and the files it vouches for.

This module is the one place that knows the bundle format. It is imported by the service, so it
must stay free of torch, transformers and onnx: plain pydantic, hashlib and the filesystem.

A bundle directory holds `bundle.json`, a tokenizer in the `tokenizers` JSON format and one or more
ONNX model variants (fp32 always; fp16 / int8 optionally). Every file is listed with its sha256 so a
server can refuse a bundle that was copied incompletely or tampered with.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    field_validator,
    model_validator,
)

SCHEMA_VERSION: Literal[1] = 1
MANIFEST_NAME = "bundle.json"
TOKENIZER_NAME = "tokenizer.json"
# Only these are ever read from a bundle: no pickles, no code.
ALLOWED_SUFFIXES = (".onnx", ".onnx_data", ".json", ".md")

Precision = Literal["fp32", "fp16", "int8"]
Task = Literal["pair-classification", "classification"]
KNOWN_INPUTS = frozenset({"input_ids", "attention_mask", "token_type_ids"})


class BundleError(Exception):
    """A bundle that must not be served, with a message that names the bundle and the problem."""

    def __init__(self, bundle_dir: Path, problem: str) -> None:
        self.bundle_dir = bundle_dir
        self.problem = problem
        super().__init__(f"bundle {bundle_dir}: {problem}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileDigest(_Strict):
    path: str = Field(description="path relative to the bundle directory, POSIX separators")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0)

    @field_validator("path")
    @classmethod
    def _inside_bundle(cls, value: str) -> str:
        pure = PurePosixPath(value)
        if pure.is_absolute() or ".." in pure.parts or "\\" in value or not pure.parts:
            raise ValueError(f"file path {value!r} must be relative and stay inside the bundle")
        if not value.endswith(ALLOWED_SUFFIXES):
            raise ValueError(f"file {value!r} has a type a bundle may not carry {ALLOWED_SUFFIXES}")
        return value


class ParityReport(_Strict):
    """How closely a variant's outputs match the reference (PyTorch) model."""

    reference: str
    max_abs_logit_diff: float
    argmax_agreement: float = Field(ge=0.0, le=1.0)
    n_examples: int = Field(ge=0)
    tolerance: float = Field(description="the gate's limit on max_abs_logit_diff")
    passed: bool
    sample: str = Field(default="", description="which inputs were compared")
    min_argmax_agreement: float | None = None
    max_accuracy_drop: float | None = Field(
        default=None, description="per language, in accuracy units (0.01 is one point)"
    )
    failures: list[str] = Field(default_factory=list, description="why the gate failed, if it did")
    per_language: dict[str, dict[str, float]] = Field(default_factory=dict)


class ModelVariant(FileDigest):
    precision: Precision
    external_data: list[FileDigest] = Field(default_factory=list)
    optimization: str | None = None
    parity: ParityReport | None = None


class LanguageResult(_Strict):
    n: int = Field(ge=0)
    accuracy: float = Field(ge=0.0, le=1.0)
    accuracy_ci95: tuple[float, float] | None = None
    macro_f1: float | None = None
    majority_baseline: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="accuracy of always predicting the commonest label",
    )


class Evaluation(_Strict):
    task: str
    split: str
    ids: str = Field(description="which example ids were evaluated, e.g. '1500-1999'")
    zero_shot: bool = True
    per_language: dict[str, LanguageResult] = Field(default_factory=dict)
    notes: str = ""


class Provenance(_Strict):
    base_model: str
    recipe: str | None = None
    intermediate_tasks: list[str] = Field(default_factory=list)
    target_task: str
    seeds: list[int] = Field(default_factory=list)
    data_ids: dict[str, str] = Field(
        default_factory=dict, description="phase or split -> the exact example ids it used"
    )
    exporter: str = Field(description="which export path produced the ONNX graph")
    code_version: str | None = None
    library_versions: dict[str, str] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    source: str | None = Field(default=None, description="checkpoint directory or hub id exported")
    training_run: dict[str, JsonValue] | None = Field(
        default=None, description="the training run's polyprobe_run.json, as written"
    )


class BundleManifest(_Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    version: str = Field(pattern=r"^[0-9]+(\.[0-9]+)*$")
    task: Task
    labels: list[str] = Field(min_length=2)
    max_sequence_length: int = Field(gt=2, le=8192)
    inputs: list[str] = Field(min_length=1, description="ONNX graph input names, in feed order")
    outputs: list[str] = Field(default_factory=lambda: ["logits"])
    opset: int = Field(ge=7)
    tokenizer: FileDigest
    models: list[ModelVariant] = Field(min_length=1)
    provenance: Provenance
    evaluation: list[Evaluation] = Field(default_factory=list)
    model_card: FileDigest | None = Field(default=None, description="the bundle's README.md")

    @field_validator("labels")
    @classmethod
    def _unique_labels(cls, labels: list[str]) -> list[str]:
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels must be unique, got {labels}")
        return labels

    @field_validator("inputs")
    @classmethod
    def _known_inputs(cls, inputs: list[str]) -> list[str]:
        unknown = sorted(set(inputs) - KNOWN_INPUTS)
        if unknown:
            raise ValueError(
                f"inputs {unknown} are not ones a text encoder takes {sorted(KNOWN_INPUTS)}"
            )
        if "input_ids" not in inputs:
            raise ValueError("inputs must include input_ids")
        return inputs

    @model_validator(mode="after")
    def _one_variant_per_precision(self) -> BundleManifest:
        precisions = [m.precision for m in self.models]
        if len(set(precisions)) != len(precisions):
            raise ValueError(f"at most one model file per precision, got {precisions}")
        return self

    def variant(self, precision: Precision) -> ModelVariant | None:
        return next((m for m in self.models if m.precision == precision), None)

    def all_files(self) -> Iterable[FileDigest]:
        yield self.tokenizer
        for model in self.models:
            yield model
            yield from model.external_data
        if self.model_card is not None:
            yield self.model_card


def sha256_of(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def digest_file(bundle_dir: Path, relative_path: str) -> FileDigest:
    path = bundle_dir / relative_path
    return FileDigest(path=relative_path, sha256=sha256_of(path), size_bytes=path.stat().st_size)


def read_manifest(bundle_dir: Path) -> BundleManifest:
    """Parse `bundle.json`, naming the field at fault; does not look at the other files."""
    manifest_path = bundle_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleError(bundle_dir, f"missing {MANIFEST_NAME}")
    try:
        raw = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(bundle_dir, f"{MANIFEST_NAME} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise BundleError(bundle_dir, f"{MANIFEST_NAME} must hold a JSON object")
    found = raw.get("schema_version")
    if found != SCHEMA_VERSION:
        raise BundleError(
            bundle_dir,
            f"unknown schema_version {found!r}; this polyprobe reads schema_version {SCHEMA_VERSION}"
            " (re-export the bundle, or upgrade polyprobe)",
        )
    try:
        return BundleManifest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise BundleError(bundle_dir, f"invalid {MANIFEST_NAME}: {problems}") from exc


def verify_files(bundle_dir: Path, manifest: BundleManifest) -> None:
    """Check that every listed file is present, the size and sha256 match, and nothing escapes."""
    root = bundle_dir.resolve()
    for entry in manifest.all_files():
        path = (bundle_dir / entry.path).resolve()
        if not path.is_relative_to(root):
            raise BundleError(bundle_dir, f"{entry.path} resolves outside the bundle")
        if not path.is_file():
            raise BundleError(bundle_dir, f"missing file {entry.path} (listed in {MANIFEST_NAME})")
        size = path.stat().st_size
        if size != entry.size_bytes:
            raise BundleError(
                bundle_dir,
                f"size mismatch for {entry.path}: {size} bytes on disk, {entry.size_bytes} in"
                f" {MANIFEST_NAME} (incomplete copy?)",
            )
        actual = sha256_of(path)
        if actual != entry.sha256:
            raise BundleError(
                bundle_dir,
                f"sha256 mismatch for {entry.path}: file has {actual}, {MANIFEST_NAME} says"
                f" {entry.sha256}",
            )


def check_graph_inputs(
    bundle_dir: Path, manifest: BundleManifest, graph_inputs: Iterable[str]
) -> None:
    """The manifest's inputs must be exactly the inputs the ONNX graph declares."""
    declared = set(graph_inputs)
    listed = set(manifest.inputs)
    if listed - declared:
        raise BundleError(
            bundle_dir,
            f"{MANIFEST_NAME} lists inputs {sorted(listed - declared)} that the ONNX graph does not"
            f" declare (graph inputs: {sorted(declared)})",
        )
    if declared - listed:
        raise BundleError(
            bundle_dir,
            f"the ONNX graph requires inputs {sorted(declared - listed)} that {MANIFEST_NAME} does"
            f" not list",
        )


def load_bundle(bundle_dir: Path) -> BundleManifest:
    """Read and fully verify a bundle directory; raises BundleError saying what is wrong."""
    manifest = read_manifest(bundle_dir)
    verify_files(bundle_dir, manifest)
    return manifest


def write_manifest(bundle_dir: Path, manifest: BundleManifest) -> Path:
    """Write `bundle.json` after checking that the files it lists are really there and match."""
    verify_files(bundle_dir, manifest)
    path = bundle_dir / MANIFEST_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
