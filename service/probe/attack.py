"""Running `"family": "attack"` searches against a served model, and their report.

The search is `robustness.attack`; here it meets the model. All inputs are searched in lockstep,
so each round is one batch over every unfinished input, scored through the same batched,
length-sorted path as the sampled families (`run.score_in_batches`) and counted in the same
progress and metrics. Edits the model's tokenizer erases (same token ids) are dropped before
they cost a query. Statistics: success rate with a Wilson interval, queries and words changed
per input with percentile bootstrap intervals, overall, per language and per script.
"""

from __future__ import annotations

import functools
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import replace

from anyio import to_thread
from export.features import TextPair
from robustness.attack import (
    ATTACK_NAME,
    AttackConfig,
    AttackInput,
    AttackResult,
    Lockstep,
    check_config,
    search,
)
from robustness.stats import proportion

from service.probe import run
from service.probe.assemble import StatsOptions, bootstrap, distribution, interval, undefined
from service.probe.language import UNDETERMINED
from service.probe.plan import PreparedInput, ProbeSpec, prepare_inputs
from service.probe.run import ProbeContext, Progress
from service.probe.schemas import (
    AttackReport,
    AttackResultOut,
    AttackSummary,
    LabelProbability,
    PerturbationInfo,
    ProbeRequest,
    ProbeResponse,
    TextPairOut,
    Timing,
    WordEditOut,
)
from service.probe.scoring import token_ids
from service.repository import LoadedModel


def attack_specs(specs: Sequence[ProbeSpec]) -> list[tuple[ProbeSpec, AttackConfig]]:
    return [(spec, spec.attack) for spec in specs if spec.attack is not None]


async def run_attack(
    model: LoadedModel,
    inputs: Sequence[PreparedInput],
    config: AttackConfig,
    ctx: ProbeContext,
    progress: Progress,
) -> list[AttackResult]:
    """Search every input; cancellable between rounds, like any probe."""
    settings, limiter = ctx.settings, ctx.limiter
    families = check_config(config)
    encode = functools.partial(token_ids, model.tokenizer, chunk=settings.probe_batch_size)
    items = [
        AttackInput(
            text=item.text,
            text_pair=item.text_pair,
            lang=None if item.lang == UNDETERMINED else item.lang,
            example_id=item.id,
        )
        for item in inputs
    ]
    budget = len(items) * config.query_budget
    progress.evaluations_total += budget

    def count(n: int) -> None:
        progress.evaluations_done += n

    def start() -> Lockstep:
        return Lockstep([search(item, config, families, encode) for item in items])

    score = run.scorer(model, ctx)
    lockstep = await to_thread.run_sync(start, limiter=limiter)
    while not lockstep.done:
        queries: list[TextPair] = lockstep.queries()
        scored = await run.score_in_batches(
            queries, score, settings.probe_batch_size, limiter, count
        )
        ctx.metrics.probe_evaluations.labels(model.name).inc(len(queries))
        rows = [s.probabilities for s in scored]
        await to_thread.run_sync(lockstep.feed, rows, limiter=limiter)
    results = lockstep.results()
    # The budget was an upper bound: what was left unused was never going to be evaluated.
    progress.evaluations_total -= budget - sum(r.queries for r in results)
    return results


def _label(labels: Sequence[str], index: int, probability: float) -> LabelProbability:
    return LabelProbability(label=labels[index], probability=probability)


def result_out(item: PreparedInput, result: AttackResult, labels: Sequence[str]) -> AttackResultOut:
    final = result.final_label
    return AttackResultOut(
        input_index=item.index,
        id=item.id,
        lang=item.lang,
        success=result.success,
        stop=result.stop,
        queries=result.queries,
        words=result.words,
        words_changed=len(result.edits),
        original=TextPairOut(text=item.text, text_pair=item.text_pair),
        adversarial=TextPairOut(text=result.text, text_pair=result.text_pair),
        edits=[
            WordEditOut(
                field=e.field, start=e.start, original=e.original, edited=e.edited, family=e.family
            )
            for e in result.edits
        ],
        clean_prediction=_label(labels, result.original_label, result.original_probability),
        final_prediction=_label(labels, final, result.final_probabilities[final]),
        original_label_probability=result.final_probability,
    )


def summary(
    group: str,
    items: Sequence[PreparedInput],
    results: Sequence[AttackResult],
    labels: Sequence[str],
    opts: StatsOptions,
) -> AttackSummary:
    on_correct = [
        r.success
        for item, r in zip(items, results, strict=True)
        if item.gold is not None and labels[r.original_label] == item.gold
    ]
    with_gold = sum(item.gold is not None for item in items)
    successes = [len(r.edits) for r in results if r.success]
    return AttackSummary(
        group=group,
        n_inputs=len(items),
        success_rate=interval(proportion([r.success for r in results], opts.confidence)),
        success_rate_on_correct=(
            interval(proportion(on_correct, opts.confidence))
            if with_gold == len(items) and items
            else undefined(
                len(on_correct), "wilson", f"gold labels given for {with_gold} of {len(items)}"
            )
        ),
        queries_per_input=bootstrap([r.queries for r in results], opts, "percentile bootstrap"),
        words_changed=bootstrap(successes, opts, "percentile bootstrap"),
        clean_predictions=distribution(
            labels, [labels[r.original_label] for r in results], what="clean predictions"
        ),
    )


def _groups(
    inputs: Sequence[PreparedInput], results: Sequence[AttackResult], by_script: bool
) -> dict[str, tuple[list[PreparedInput], list[AttackResult]]]:
    groups: dict[str, tuple[list[PreparedInput], list[AttackResult]]] = defaultdict(
        lambda: ([], [])
    )
    for item, result in zip(inputs, results, strict=True):
        members = groups[item.script if by_script else item.lang]
        members[0].append(item)
        members[1].append(result)
    return dict(sorted(groups.items()))


def attack_report(
    spec: ProbeSpec,
    config: AttackConfig,
    inputs: Sequence[PreparedInput],
    results: Sequence[AttackResult],
    labels: Sequence[str],
    opts: StatsOptions,
) -> AttackReport:
    views = {
        by_script: [
            summary(group, members, found, labels, opts)
            for group, (members, found) in _groups(inputs, results, by_script).items()
        ]
        for by_script in (False, True)
    }
    return AttackReport(
        perturbation=spec.index,
        spec_version=spec.family.spec_version,
        severity=config.max_word_share,
        query_budget=config.query_budget,
        edits=list(config.edits),
        candidates_per_family=config.candidates_per_family,
        overall=summary("all", inputs, results, labels, opts),
        by_language=views[False],
        by_script=views[True],
        results=[result_out(i, r, labels) for i, r in zip(inputs, results, strict=True)],
    )


def attack_info(spec: ProbeSpec, config: AttackConfig) -> PerturbationInfo:
    return PerturbationInfo(
        index=spec.index,
        family=ATTACK_NAME,
        spec_version=spec.family.spec_version,
        severity=spec.severity,
        samples=config.candidates_per_family,
        target=spec.target,
        kind="attack",
        description=spec.family.description,
        note=f"query budget {config.query_budget} per input; edits tried in this order: "
        f"{', '.join(config.edits)}",
    )


async def probe(
    model: LoadedModel,
    body: ProbeRequest,
    specs: list[ProbeSpec],
    ctx: ProbeContext,
    progress: Progress | None = None,
    on_partial: Callable[[ProbeResponse], None] | None = None,
) -> ProbeResponse:
    """`run.probe`, then every attack spec in request order (a job shows the sampled families'
    report as its partial result while the attacks run)."""
    began = time.perf_counter()
    progress = progress or Progress()
    response = await run.probe(model, body, specs, ctx, progress, on_partial)
    attacks = attack_specs(specs)
    if not attacks:
        return response
    if on_partial is not None:
        on_partial(response)

    def prepare() -> tuple[PreparedInput, ...]:
        # Detection is deterministic, so this gives the plan's languages again.
        return prepare_inputs(body.inputs, ctx.detector.detect)

    inputs = await to_thread.run_sync(prepare, limiter=ctx.limiter)
    opts, labels = run.stats_options(body, ctx.settings), model.manifest.labels
    reports, infos = [], {}
    # The plan counted the attack specs as done (they have no samples): count them as they run.
    progress.perturbations_done = len(specs) - len(attacks)
    for spec, config in attacks:
        progress.phase = f"attack perturbations[{spec.index}]"
        seeded = replace(config, seed=body.seed)
        results = await run_attack(model, inputs, seeded, ctx, progress)
        reports.append(
            await to_thread.run_sync(
                attack_report, spec, seeded, inputs, results, labels, opts, limiter=ctx.limiter
            )
        )
        infos[spec.index] = attack_info(spec, seeded)
        progress.perturbations_done += 1
    progress.phase = "done"
    return response.model_copy(
        update={
            "attacks": reports,
            "perturbations": [infos.get(p.index, p) for p in response.perturbations],
            "timing": Timing(duration_s=round(time.perf_counter() - began, 3)),
        }
    )
