"""Request and response bodies of the probe endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

# A BCP 47-like tag (en, pt-BR, sr-Latn, zh-Hant-TW); it becomes a cell key and a metric label.
LANG_TAG = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}$"


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProbeInput(_Request):
    text: str = Field(min_length=1, description="the text, or the first sentence of a pair")
    text_pair: str | None = Field(
        default=None, min_length=1, description="the second sentence, for pair models"
    )
    label: str | None = Field(
        default=None, description="gold label (one of the model's label names), when known"
    )
    lang: str | None = Field(
        default=None,
        pattern=LANG_TAG,
        description="language tag such as de or zh; detected from the text when left out",
    )
    id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="example id: seeds this input's perturbations, so parallel examples in "
        "several languages (same id) share random streams; unique within a request",
    )


class PerturbationRequest(_Request):
    family: str = Field(description="a family from robustness/FAMILIES.md, e.g. char_swap")
    severity: float = Field(description="0..1: the share of eligible units edited")
    samples: int = Field(default=1, ge=1, description="perturbed samples per input")
    target: Literal["both", "text", "text_pair"] = Field(
        default="both", description="for text families on pairs: which sentence(s) to edit"
    )
    query_budget: int | None = Field(
        default=None,
        ge=2,
        description='family "attack" only: model queries per input, the clean one included '
        "(default 100); severity is then the largest share of words edited and samples the "
        "candidates per edit family and word",
    )
    edits: list[str] | None = Field(
        default=None,
        min_length=1,
        description='family "attack" only: the label-preserving text families to draw edits '
        "from, tried in this order (default: character edits, keyboard typos, homoglyphs, "
        "diacritics)",
    )

    @model_validator(mode="after")
    def _attack_options(self) -> PerturbationRequest:
        if self.family != "attack" and (self.query_budget is not None or self.edits is not None):
            raise ValueError(
                f'query_budget and edits are options of family "attack"; family '
                f"{self.family!r} takes family, severity, samples and target"
            )
        return self


class ProbeRequest(_Request):
    inputs: list[ProbeInput]
    perturbations: list[PerturbationRequest] = Field(min_length=1)
    seed: int = Field(default=0, ge=0, le=2**63 - 1, description="repeat a probe with its seed")
    confidence: float = Field(default=0.95, ge=0.5, le=0.999, description="interval level")
    max_examples: int = Field(
        default=5, ge=0, le=100, description="flipped examples shown per cell"
    )
    on_unsupported: Literal["skip", "error"] = Field(
        default="skip",
        description="an input whose language or script a family does not support: skip it "
        "and report it under `skipped` (default), or refuse the request with 422",
    )


class CompareRequest(ProbeRequest):
    model_a: str
    model_b: str


class JobRequest(ProbeRequest):
    """A probe (`model`) or a comparison (`model_a` and `model_b`) to run in the background."""

    model: str | None = None
    model_a: str | None = None
    model_b: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> JobRequest:
        probe = self.model is not None and self.model_a is None and self.model_b is None
        compare = self.model is None and self.model_a is not None and self.model_b is not None
        if not (probe or compare):
            raise ValueError(
                'send "model" for a probe, or "model_a" and "model_b" for a comparison'
            )
        return self


class Interval(BaseModel):
    """A point estimate with its confidence interval; None where it cannot be estimated."""

    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    method: str
    note: str | None = None


class PredictionDistribution(BaseModel):
    n: int
    counts: dict[str, int] = Field(description="predictions per label, in the model's order")
    dominant_label: str | None
    dominant_share: float | None
    warning: str | None = Field(
        default=None,
        description="set when one label takes over 90% of 10 or more clean predictions",
    )


class CleanVsPerturbedTest(BaseModel):
    """Exact McNemar test of correctness on the clean vs the first perturbed sample."""

    n: int
    clean_only_correct: int
    perturbed_only_correct: int
    p_value: float | None
    p_holm: float | None = Field(description="Holm-adjusted over the cells of this view")
    note: str | None = None


class ModelsTest(BaseModel):
    """Exact McNemar test of one paired binary outcome of model A vs model B."""

    outcome: Literal["flipped", "changed", "correct"]
    n: int
    a_only: int = Field(description="inputs where the outcome holds for model A only")
    b_only: int = Field(description="inputs where the outcome holds for model B only")
    p_value: float | None
    p_holm: float | None = Field(description="Holm-adjusted over the cells of this view")
    note: str | None = None


class TextPairOut(BaseModel):
    text: str
    text_pair: str | None


class LabelProbability(BaseModel):
    label: str
    probability: float


class ExampleOut(BaseModel):
    input_index: int
    id: str | None
    sample_index: int
    gold: str | None
    original: TextPairOut
    perturbed: TextPairOut
    clean_prediction: LabelProbability
    perturbed_prediction: LabelProbability


class CellCounts(BaseModel):
    perturbation: int = Field(description="index into `perturbations`")
    family: str
    severity: float
    group: str = Field(description="the language (by_language) or script (by_script)")
    n_inputs: int = Field(description="inputs with at least one sample the model saw")
    n_samples: int = Field(description="perturbed samples the model saw")
    n_noop: int = Field(description="samples the model's tokenizer made identical to the input")


class RobustnessCell(CellCounts):
    clean_predictions: PredictionDistribution
    clean_accuracy: Interval
    perturbed_accuracy: Interval
    accuracy_change: Interval = Field(description="perturbed minus clean accuracy")
    flip_rate: Interval
    any_flip_rate: Interval = Field(description="inputs with at least one flipped sample")
    drop_reference: Literal["gold", "clean_prediction"]
    confidence_drop: Interval = Field(description="drop of the reference label's probability")
    margin_drop: Interval = Field(description="drop of the reference label's signed margin")
    mcnemar: CleanVsPerturbedTest
    flipped_examples: list[ExampleOut]


class DirectionalCell(CellCounts):
    clean_predictions: PredictionDistribution
    perturbed_predictions: PredictionDistribution = Field(description="over perturbed samples")
    change_rate: Interval = Field(description="share of predictions the edit changed")
    any_change_rate: Interval
    reference: Literal["gold", "clean_prediction"]
    change_rate_by_reference: dict[str, Interval] = Field(
        description="change rate among inputs of each reference label"
    )
    changed_examples: list[ExampleOut]


CellT = TypeVar("CellT", bound=BaseModel)


class CellViews(BaseModel, Generic[CellT]):
    by_language: list[CellT]
    by_script: list[CellT]


class GroupSummary(BaseModel):
    """Clean (unperturbed) behaviour on the inputs of one language or script."""

    group: str
    n_inputs: int
    n_lang_detected: int
    clean_accuracy: Interval
    clean_predictions: PredictionDistribution


class ModelInfo(BaseModel):
    name: str
    version: str
    sha256: str = Field(description="of the ONNX file served")
    precision: str
    task: str
    labels: list[str]


class PerturbationInfo(BaseModel):
    index: int
    family: str
    spec_version: str = Field(description="family@version: changes whenever its output does")
    severity: float
    samples: int
    target: str
    kind: Literal["invariance", "directional", "attack"]
    description: str
    note: str | None = None


class Skipped(BaseModel):
    perturbation: int
    family: str
    lang: str
    n_inputs: int
    reason: str


class LanguageDetection(BaseModel):
    method: str
    languages: list[str] = Field(description="the candidates the detector chooses among")
    n_detected: int


class EvaluationCounts(BaseModel):
    clean: int
    perturbed: int = Field(description="perturbed samples sent to the model")
    noop: int
    skipped: int


class Timing(BaseModel):
    duration_s: float


class ProbeReport(BaseModel):
    """What both endpoints echo so a probe can be repeated exactly."""

    seed: int
    rng_scheme: str
    confidence: float
    bootstrap_resamples: int
    correction: Literal["holm"] = "holm"
    perturbations: list[PerturbationInfo]
    language_detection: LanguageDetection
    skipped: list[Skipped]
    warnings: list[str]
    timing: Timing = Field(description="the only part that differs between repeated probes")


class WordEditOut(BaseModel):
    field: Literal["text", "text_pair"]
    start: int = Field(description="character offset of the word in the original sentence")
    original: str
    edited: str
    family: str


class AttackResultOut(BaseModel):
    input_index: int
    id: str | None
    lang: str
    success: bool = Field(description="the edit flipped the clean prediction")
    stop: Literal["flipped", "budget", "exhausted", "max_words", "no_words"] = Field(
        description="why the search ended: a flip, the query budget, no word left to try, "
        "the severity's word cap, or no editable word"
    )
    queries: int = Field(description="model queries used, the clean one included")
    words: int = Field(description="words the search could edit")
    words_changed: int
    original: TextPairOut
    adversarial: TextPairOut = Field(description="the minimal flipping edit, or the best found")
    edits: list[WordEditOut]
    clean_prediction: LabelProbability
    final_prediction: LabelProbability
    original_label_probability: float = Field(
        description="probability of the clean prediction's label on the adversarial text"
    )


class AttackSummary(BaseModel):
    group: str = Field(description='"all", a language or a script')
    n_inputs: int
    success_rate: Interval = Field(description="inputs whose prediction the search flipped")
    success_rate_on_correct: Interval = Field(
        description="among inputs with a gold label the clean prediction got right"
    )
    queries_per_input: Interval
    words_changed: Interval = Field(description="mean words edited, over successful inputs")
    clean_predictions: PredictionDistribution


class AttackReport(BaseModel):
    perturbation: int = Field(description="index into `perturbations`")
    spec_version: str
    severity: float = Field(description="the largest share of words an edit may change")
    query_budget: int
    edits: list[str]
    candidates_per_family: int
    overall: AttackSummary
    by_language: list[AttackSummary]
    by_script: list[AttackSummary]
    results: list[AttackResultOut]


class ProbeResponse(ProbeReport):
    model: ModelInfo
    evaluations: EvaluationCounts
    languages: list[GroupSummary]
    scripts: list[GroupSummary]
    invariance: CellViews[RobustnessCell]
    directional: CellViews[DirectionalCell]
    attacks: list[AttackReport] = Field(
        default_factory=list, description='one per "attack" perturbation, in request order'
    )


class ModelCellStats(BaseModel):
    flip_rate: Interval = Field(description="change rate, for directional families")
    clean_accuracy: Interval | None = None
    perturbed_accuracy: Interval | None = None
    accuracy_change: Interval | None = None


class CompareCell(CellCounts):
    n_noop_one_model: int = Field(
        description="samples a no-op for one model only: left out so both see the same ones"
    )
    a: ModelCellStats
    b: ModelCellStats
    flip_rate_difference: Interval = Field(description="model A minus model B")
    flip_test: ModelsTest
    perturbed_accuracy_difference: Interval | None = None
    accuracy_change_difference: Interval | None = None
    perturbed_accuracy_test: ModelsTest | None = None


class CompareGroup(BaseModel):
    group: str
    n_inputs: int
    a: GroupSummary
    b: GroupSummary
    clean_accuracy_difference: Interval = Field(description="model A minus model B")
    clean_accuracy_test: ModelsTest


class CompareResponse(ProbeReport):
    model_a: ModelInfo
    model_b: ModelInfo
    difference: Literal["model_a - model_b"] = "model_a - model_b"
    evaluations: dict[str, EvaluationCounts] = Field(description="per model: a, b")
    languages: list[CompareGroup]
    scripts: list[CompareGroup]
    invariance: CellViews[CompareCell]
    directional: CellViews[CompareCell]


class JobProgress(BaseModel):
    phase: str
    evaluations_done: int
    evaluations_total: int = Field(description="known once no-ops are found; 0 before")
    perturbations_done: int
    perturbations_total: int


class JobBody(BaseModel):
    id: str
    kind: Literal["probe", "compare"]
    models: list[str]
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: JobProgress
    partial: bool = Field(
        description="result covers the perturbations finished so far (Holm over those cells)"
    )
    result: ProbeResponse | CompareResponse | None
    error: dict[str, str] | None
