"""Running probes against served models: the one part of service.probe that calls a model.

Model calls go through the model's batcher, as predictions do, at probe priority: a batch of
probe inputs runs only when no prediction waits, so probes never hold predictions up by more
than the batch already running. Tokenisation, truncation and the latency metrics behave the
same. Chunks go in length order, clean inputs first and then one perturbation spec after
another, so a job can show partial results. A shared limiter caps the probe work running at
once (planning and statistics included), so probes queue behind each other.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from anyio import CapacityLimiter, from_thread, to_thread
from export.features import TextPair

from service.batcher import Engines, Priority
from service.errors import InvalidInput
from service.inference import validate_inputs
from service.metrics import ServiceMetrics
from service.probe.assemble import StatsOptions, assemble_probe
from service.probe.compare import assemble_compare
from service.probe.language import InputLanguageDetector
from service.probe.plan import (
    Limits,
    ProbePlan,
    ProbeSpec,
    check_gold_labels,
    check_perturbations,
    check_size,
    check_unique_ids,
    perturb,
    prepare_inputs,
)
from service.probe.schemas import (
    CompareResponse,
    Interval,
    ModelInfo,
    ProbeReport,
    ProbeRequest,
    ProbeResponse,
    Timing,
)
from service.probe.scoring import (
    ModelRun,
    Scored,
    evaluations,
    noop_flags,
    scored,
    token_ids,
    visible,
)
from service.repository import LoadedModel
from service.schemas import TextInput
from service.settings import Settings

ScoreFn = Callable[[Sequence[TextPair]], list[Scored]]
ReportT = TypeVar("ReportT", bound=ProbeReport)


@dataclass(frozen=True)
class ProbeContext:
    """What probes share within one service instance."""

    settings: Settings
    metrics: ServiceMetrics
    detector: InputLanguageDetector
    limiter: CapacityLimiter  # probe work running at once, over all probes
    engines: Engines | None = None  # the service's batchers; probes need them to score


@dataclass
class Progress:
    """How far a probe has got; the jobs API shows it while the probe runs."""

    phase: str = "queued"
    evaluations_total: int = 0  # clean inputs + visible samples, over all models
    evaluations_done: int = 0
    perturbations_total: int = 0
    perturbations_done: int = 0


def request_limits(settings: Settings) -> Limits:
    return Limits(
        max_inputs=settings.max_probe_inputs,
        max_evaluations=settings.max_probe_evaluations,
        inputs_setting="POLYPROBE_MAX_PROBE_INPUTS",
        evaluations_setting="POLYPROBE_MAX_PROBE_EVALUATIONS",
        advice=f"submit it as a job (POST /v1/probe/jobs, up to "
        f"{settings.max_probe_job_evaluations} evaluations)",
    )


def job_limits(settings: Settings) -> Limits:
    # Every input costs at least one evaluation, so the evaluation budget bounds inputs too.
    return Limits(
        max_inputs=settings.max_probe_job_evaluations,
        max_evaluations=settings.max_probe_job_evaluations,
        inputs_setting="POLYPROBE_MAX_PROBE_JOB_EVALUATIONS",
        evaluations_setting="POLYPROBE_MAX_PROBE_JOB_EVALUATIONS",
        advice="split it into several jobs",
    )


def model_info(model: LoadedModel) -> ModelInfo:
    return ModelInfo(
        name=model.name,
        version=model.version,
        sha256=model.variant.sha256,
        precision=model.variant.precision,
        task=model.manifest.task,
        labels=list(model.manifest.labels),
    )


def stats_options(body: ProbeRequest, settings: Settings) -> StatsOptions:
    return StatsOptions(
        confidence=body.confidence,
        n_resamples=settings.probe_bootstrap_resamples,
        seed=body.seed,
        max_examples=body.max_examples,
    )


def check_comparable(a: LoadedModel, b: LoadedModel) -> None:
    if a.manifest.task != b.manifest.task:
        raise InvalidInput(
            f"model {a.name} is a {a.manifest.task} model and {b.name} a {b.manifest.task} "
            "model: compare models of the same task"
        )
    if set(a.manifest.labels) != set(b.manifest.labels):
        raise InvalidInput(
            f"models {a.name} and {b.name} must share the label set to be compared: "
            f"{a.name} has {', '.join(a.manifest.labels)}; {b.name} has "
            f"{', '.join(b.manifest.labels)}"
        )


def check_request(
    body: ProbeRequest, models: Sequence[LoadedModel], settings: Settings, limits: Limits
) -> list[ProbeSpec]:
    """Every check that needs no model call, so a bad request costs nothing (413 / 422)."""
    if len(models) == 2:
        check_comparable(*models)
    specs = check_perturbations(
        body.perturbations, pair_model=models[0].manifest.task == "pair-classification"
    )
    check_size(len(body.inputs), specs, len(models), limits)
    # The prediction route's own checks (text length, control characters, pairs vs single
    # texts), with the probe's input limit (checked above) in place of the prediction one.
    text_settings = settings.model_copy(update={"max_inputs_per_request": len(body.inputs)})
    texts = [TextInput(text=item.text, text_pair=item.text_pair) for item in body.inputs]
    for model in models:
        validate_inputs(texts, model, text_settings)
        check_gold_labels(body.inputs, model.manifest.labels, model.name)
    check_unique_ids(body.inputs)
    return specs


async def checked(
    body: ProbeRequest, models: Sequence[LoadedModel], ctx: ProbeContext, limits: Limits
) -> list[ProbeSpec]:
    """`check_request` off the event loop: checking every character of a big job takes time."""
    return await to_thread.run_sync(check_request, body, models, ctx.settings, limits)


async def build_plan(body: ProbeRequest, specs: list[ProbeSpec], ctx: ProbeContext) -> ProbePlan:
    def work() -> ProbePlan:
        inputs = prepare_inputs(body.inputs, ctx.detector.detect)
        refuse = body.on_unsupported == "error"
        samples = perturb(inputs, specs, body.seed, refuse_unsupported=refuse)
        return ProbePlan(inputs, tuple(specs), samples, body.seed)

    return await to_thread.run_sync(work, limiter=ctx.limiter)


def _length(pair: TextPair) -> int:
    return len(pair[0]) + len(pair[1] or "")


async def score_in_batches(
    pairs: Sequence[TextPair],
    score: ScoreFn,
    batch_size: int,
    limiter: CapacityLimiter,
    on_batch: Callable[[int], None] | None = None,
) -> list[Scored]:
    """Score pairs in batches of similar length (less padding), one worker call per batch.

    The order is a stable sort of the pairs alone, so the same probe forms the same batches and
    gets bit-identical logits, and two models compared see the same batches.
    """
    order = sorted(range(len(pairs)), key=lambda i: _length(pairs[i]))
    results: dict[int, Scored] = {}
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = await to_thread.run_sync(score, [pairs[i] for i in chunk], limiter=limiter)
        results.update(zip(chunk, batch, strict=True))
        if on_batch is not None:
            on_batch(len(chunk))
    return [results[i] for i in range(len(pairs))]


def scorer(model: LoadedModel, ctx: ProbeContext) -> ScoreFn:
    """Scores in a worker thread (the probe limiter's), waiting on the batcher's event loop."""
    if ctx.engines is None:
        raise RuntimeError("ProbeContext.engines is unset: probes score through the batchers")
    engines, labels = ctx.engines, model.manifest.labels

    def score(pairs: Sequence[TextPair]) -> list[Scored]:
        async def predict() -> list[Scored]:
            result = await engines.get(model).predict(list(pairs), Priority.PROBE)
            return [scored(p, labels) for p in result.predictions]

        return from_thread.run(predict)

    return score


async def score_by_spec(
    models: Sequence[LoadedModel], plan: ProbePlan, ctx: ProbeContext, progress: Progress
) -> AsyncIterator[tuple[int, tuple[ModelRun, ...]]]:
    """Score the plan with every model, one spec at a time; after each spec, yield how many
    specs are done and each model's run over them."""
    settings, limiter = ctx.settings, ctx.limiter
    progress.phase = "finding no-ops"
    noops = []
    for model in models:
        encode = functools.partial(token_ids, model.tokenizer, chunk=settings.probe_batch_size)
        noops.append(await to_thread.run_sync(noop_flags, plan, encode, limiter=limiter))
    progress.evaluations_total = sum(evaluations(plan, noop) for noop in noops)
    progress.perturbations_total = len(plan.specs)

    def count(n: int) -> None:
        progress.evaluations_done += n

    scorers = [scorer(model, ctx) for model in models]
    progress.phase = "scoring clean inputs"
    clean_pairs = [item.pair for item in plan.inputs]
    clean = [
        tuple(await score_in_batches(clean_pairs, s, settings.probe_batch_size, limiter, count))
        for s in scorers
    ]
    perturbed: list[list[Scored | None]] = [[] for _ in models]
    for spec in plan.specs:
        progress.phase = f"scoring perturbations[{spec.index}] ({spec.family.name})"
        span = plan.sample_range(spec.index)
        for model, score, noop, done in zip(models, scorers, noops, perturbed, strict=True):
            ids = visible(plan, noop, span)
            pairs = [plan.samples[i].pair for i in ids]
            batch = await score_in_batches(pairs, score, settings.probe_batch_size, limiter, count)
            results = dict(zip(ids, batch, strict=True))
            done.extend(results.get(i) for i in span)
            ctx.metrics.probe_evaluations.labels(model.name).inc(len(ids))
        progress.perturbations_done = spec.index + 1
        yield (
            spec.index + 1,
            tuple(
                ModelRun(tuple(m.manifest.labels), c, tuple(p), noop[: span.stop])
                for m, c, p, noop in zip(models, clean, perturbed, noops, strict=True)
            ),
        )


async def execute(
    models: Sequence[LoadedModel],
    body: ProbeRequest,
    specs: list[ProbeSpec],
    ctx: ProbeContext,
    assemble: Callable[[ProbePlan, tuple[ModelRun, ...]], ReportT],
    progress: Progress,
    on_partial: Callable[[ReportT], None] | None = None,
) -> ReportT:
    """Perturb, score and assemble a report; with `on_partial`, also after every spec."""
    began = time.perf_counter()
    progress.phase = "perturbing"
    plan = await build_plan(body, specs, ctx)
    runs: tuple[ModelRun, ...] = ()
    async for done, runs in score_by_spec(models, plan, ctx, progress):
        if on_partial is not None and done < len(plan.specs):
            progress.phase = "statistics (partial)"
            partial = await to_thread.run_sync(
                assemble, plan.prefix(done), runs, limiter=ctx.limiter
            )
            partial.timing = Timing(duration_s=round(time.perf_counter() - began, 3))
            on_partial(partial)
    progress.phase = "statistics"
    report = await to_thread.run_sync(assemble, plan, runs, limiter=ctx.limiter)
    duration = time.perf_counter() - began
    ctx.metrics.probe_duration.labels("compare" if len(models) == 2 else "probe").observe(duration)
    report.timing = Timing(duration_s=round(duration, 3))
    progress.phase = "done"
    return report


GaugeRow = tuple[str, float, str, Interval, Interval | None]  # family, severity, lang, flip, delta


def publish_gauges(metrics: ServiceMetrics, model: str, rows: Iterable[GaugeRow]) -> None:
    """Latest flip rate and accuracy change per (model, family, severity, language)."""
    for family, severity, lang, flip, delta in rows:
        labels = (model, family, str(severity), lang)
        if flip.estimate is not None:
            metrics.probe_flip_rate.labels(*labels).set(flip.estimate)
        if delta is not None and delta.estimate is not None:
            metrics.probe_accuracy_delta.labels(*labels).set(delta.estimate)


async def probe(
    model: LoadedModel,
    body: ProbeRequest,
    specs: list[ProbeSpec],
    ctx: ProbeContext,
    progress: Progress | None = None,
    on_partial: Callable[[ProbeResponse], None] | None = None,
) -> ProbeResponse:
    """Probe one model with a request that passed `checked`."""
    info, opts = model_info(model), stats_options(body, ctx.settings)

    def assemble(plan: ProbePlan, runs: tuple[ModelRun, ...]) -> ProbeResponse:
        return assemble_probe(plan, runs[0], info, opts, ctx.detector.info)

    response = await execute(
        [model], body, specs, ctx, assemble, progress or Progress(), on_partial
    )
    publish_gauges(
        ctx.metrics,
        model.name,
        (
            (c.family, c.severity, c.group, c.flip_rate, c.accuracy_change)
            for c in response.invariance.by_language
        ),
    )
    return response


async def compare(
    a: LoadedModel,
    b: LoadedModel,
    body: ProbeRequest,
    specs: list[ProbeSpec],
    ctx: ProbeContext,
    progress: Progress | None = None,
    on_partial: Callable[[CompareResponse], None] | None = None,
) -> CompareResponse:
    """Compare two models on a request that passed `checked`."""
    infos, opts = (model_info(a), model_info(b)), stats_options(body, ctx.settings)

    def assemble(plan: ProbePlan, runs: tuple[ModelRun, ...]) -> CompareResponse:
        return assemble_compare(plan, (runs[0], runs[1]), infos, opts, ctx.detector.info)

    response = await execute([a, b], body, specs, ctx, assemble, progress or Progress(), on_partial)
    cells = response.invariance.by_language
    for model, stats in ((a, [c.a for c in cells]), (b, [c.b for c in cells])):
        publish_gauges(
            ctx.metrics,
            model.name,
            (
                (c.family, c.severity, c.group, s.flip_rate, s.accuracy_change)
                for c, s in zip(cells, stats, strict=True)
            ),
        )
    return response
