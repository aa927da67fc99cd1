"""The probe pipeline end to end with a fake model (a known prediction rule), and the job store."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import SimpleNamespace

import anyio
import pytest

from export.features import TextPair
from service.errors import InvalidInput
from service.metrics import ServiceMetrics
from service.probe import run
from service.probe.jobs import Job, JobNotFound, JobStore, TooManyJobs
from service.probe.plan import Sample, check_perturbations, perturb, prepare_inputs
from service.probe.schemas import CompareResponse, ProbeRequest, ProbeResponse
from service.probe.scoring import Scored, token_ids
from service.settings import Settings
from tests.unit.test_probe_assemble import DETECTOR, LABELS, NOT, PARA, build, german_cases, probe
from tests.unit.test_probe_scoring import tokenizer

SENTENCES = [
    ("the cat sleeps", "a cat sleeps"),
    ("the dog runs", "a dog runs"),
    ("the cat runs", "the dog sleeps"),
    ("a dog sleeps", "the cat runs"),
]


def rule(pair: TextPair) -> Scored:
    """Paraphrase exactly when both sentences mention the cat or both the dog."""
    text, text_pair = pair[0], pair[1] or ""
    same = ("cat" in text) == ("cat" in text_pair) and ("dog" in text) == ("dog" in text_pair)
    return Scored(PARA, (0.1, 0.9)) if same else Scored(NOT, (0.8, 0.2))


def fake_model(name: str) -> SimpleNamespace:
    return SimpleNamespace(
        name=name,
        version="1",
        tokenizer=tokenizer(),
        manifest=SimpleNamespace(labels=list(LABELS), task="pair-classification"),
        variant=SimpleNamespace(sha256="f" * 64, precision="fp32"),
    )


@pytest.fixture
def context(monkeypatch: pytest.MonkeyPatch) -> run.ProbeContext:
    def scorer(model: object, ctx: run.ProbeContext):  # type: ignore[no-untyped-def]
        return lambda pairs: [rule(p) for p in pairs]

    monkeypatch.setattr(run, "scorer", scorer)
    detector = SimpleNamespace(detect=lambda texts: ["en"] * len(texts), info=DETECTOR)
    settings = Settings(probe_batch_size=3, probe_bootstrap_resamples=200)
    return run.ProbeContext(settings, ServiceMetrics(), detector, anyio.CapacityLimiter(1))  # type: ignore[arg-type]


def request(**changes: object) -> ProbeRequest:
    body = {
        "inputs": [
            {"text": t, "text_pair": p, "label": PARA if i < 2 else NOT, "lang": "en"}
            for i, (t, p) in enumerate(SENTENCES)
        ],
        "perturbations": [
            {"family": "char_swap", "severity": 0.5, "samples": 2},
            {"family": "char_delete", "severity": 0.3},
        ],
        "seed": 5,
        **changes,
    }
    return ProbeRequest.model_validate(body)


def expected_flips(samples: Sequence[Sample], spec: int) -> dict[int, list[bool]]:
    """Per input, whether each visible sample of `spec` flips the rule's prediction."""
    ids = tokenizer()
    flips: dict[int, list[bool]] = {}
    for sample in samples:
        original = SENTENCES[sample.input]
        if sample.spec == spec and token_ids(ids, [original], 8) != token_ids(
            ids, [sample.pair], 8
        ):
            flips.setdefault(sample.input, []).append(
                rule(original).label != rule(sample.pair).label
            )
    return flips


def test_a_probe_runs_spec_by_spec_with_partial_results(context: run.ProbeContext) -> None:
    body = request()
    model = fake_model("fake")
    partials: list[ProbeResponse] = []
    progress = run.Progress()

    async def main() -> ProbeResponse:
        specs = await run.checked(body, [model], context, run.request_limits(context.settings))  # type: ignore[list-item]
        return await run.probe(model, body, specs, context, progress, partials.append)  # type: ignore[arg-type]

    response = anyio.run(main)
    inputs = prepare_inputs(body.inputs, lambda texts: ["en"] * len(texts))
    specs = check_perturbations(body.perturbations, pair_model=True)
    samples = perturb(inputs, specs, body.seed, refuse_unsupported=False)
    swap, delete = response.invariance.by_language
    for cell in (swap, delete):
        flips = expected_flips(samples, cell.perturbation)
        assert (cell.n_inputs, cell.n_samples) == (len(flips), sum(map(len, flips.values())))
        assert cell.n_samples + cell.n_noop == 4 * specs[cell.perturbation].samples
        per_input = [sum(f) / len(f) for f in flips.values()]
        assert cell.flip_rate.estimate == pytest.approx(sum(per_input) / len(per_input))
    assert swap.flip_rate.method.startswith("cluster bootstrap")  # 2 samples per input
    assert [len(p.invariance.by_language) for p in partials] == [1]  # after spec 0 of 2
    assert partials[0].invariance.by_language[0].family == "char_swap"
    assert (progress.phase, progress.perturbations_done) == ("done", 2)
    assert progress.evaluations_done == progress.evaluations_total
    assert progress.evaluations_total == 4 + response.evaluations.perturbed
    assert response.languages[0].clean_accuracy.estimate == 1.0  # the rule is right on all 4
    assert response.timing.duration_s >= 0


def test_the_same_seed_gives_the_same_report(context: run.ProbeContext) -> None:
    model = fake_model("fake")

    async def once(seed: int) -> str:
        body = request(seed=seed)
        specs = await run.checked(body, [model], context, run.request_limits(context.settings))  # type: ignore[list-item]
        response = await run.probe(model, body, specs, context)  # type: ignore[arg-type]
        return response.model_copy(update={"timing": None}).model_dump_json()

    first, second, other = anyio.run(lambda: _gather(once(5), once(5), once(6)))
    assert first == second
    assert first != other


async def _gather(*coroutines):  # type: ignore[no-untyped-def]
    return [await c for c in coroutines]


def test_comparing_a_model_with_its_copy_shows_no_difference(context: run.ProbeContext) -> None:
    a, b = fake_model("a"), fake_model("b")
    body = request()

    async def main() -> CompareResponse:
        specs = await run.checked(body, [a, b], context, run.request_limits(context.settings))  # type: ignore[list-item]
        return await run.compare(a, b, body, specs, context)  # type: ignore[arg-type]

    response = anyio.run(main)
    for cell in response.invariance.by_language:
        assert cell.flip_rate_difference.estimate == 0.0
        assert cell.flip_test.p_value == 1.0
    assert response.evaluations["a"] == response.evaluations["b"]


def test_checks_run_before_any_model_call(context: run.ProbeContext) -> None:
    model = fake_model("fake")
    body = request(inputs=[{"text": "the cat", "text_pair": "a cat", "label": "yes"}])
    with pytest.raises(InvalidInput, match=r"inputs\[0\]\.label 'yes'"):
        run.check_request(body, [model], context.settings, run.request_limits(context.settings))  # type: ignore[list-item]
    single = fake_model("single")
    single.manifest.task = "classification"
    with pytest.raises(InvalidInput, match="same task"):
        run.check_request(
            request(), [model, single], context.settings, run.request_limits(context.settings)
        )  # type: ignore[list-item]


def test_the_request_budget_points_to_the_jobs_api() -> None:
    limits = run.request_limits(Settings(max_probe_evaluations=10, max_probe_job_evaluations=99))
    assert limits.advice == "submit it as a job (POST /v1/probe/jobs, up to 99 evaluations)"
    assert run.job_limits(Settings(max_probe_job_evaluations=99)).max_inputs == 99


def a_report() -> ProbeResponse:
    return probe(*build(german_cases(), [("char_swap", 0.1)]))


def test_a_job_runs_in_the_background_and_keeps_its_result() -> None:
    async def main() -> Job:
        store = JobStore(capacity=4)
        release = asyncio.Event()

        async def work(job: Job) -> ProbeResponse:
            job.set_partial(a_report())
            await release.wait()
            return a_report()

        job = store.submit("probe", ["m"], work)
        await asyncio.sleep(0)
        assert store.get(job.id).body().status == "running"
        assert store.get(job.id).partial is True
        release.set()
        assert job.task is not None
        await job.task
        return store.get(job.id)

    job = anyio.run(main)
    body = job.body()
    assert (body.status, body.partial, body.kind, body.models) == (
        "succeeded",
        False,
        "probe",
        ["m"],
    )
    assert body.result is not None and body.finished_at is not None


def test_a_job_can_be_cancelled_and_failures_are_reported() -> None:
    async def main() -> tuple[Job, Job, Job]:
        store = JobStore(capacity=4)

        async def forever(job: Job) -> ProbeResponse:
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        async def refused(job: Job) -> ProbeResponse:
            raise InvalidInput("inputs exceed the max sequence length")

        async def broken(job: Job) -> ProbeResponse:
            raise RuntimeError("boom")

        jobs = [store.submit("probe", ["m"], w) for w in (forever, refused, broken)]
        await asyncio.sleep(0)
        store.cancel(jobs[0].id)
        await asyncio.gather(*(j.task for j in jobs if j.task), return_exceptions=True)
        return jobs[0], jobs[1], jobs[2]

    cancelled, refused, broken = anyio.run(main)
    assert cancelled.status == "cancelled"
    assert (refused.status, refused.error) == (
        "failed",
        {"type": "invalid_input", "message": "inputs exceed the max sequence length"},
    )
    assert broken.error is not None and broken.error["type"] == "internal"


def test_the_store_evicts_the_oldest_finished_job_and_refuses_when_all_run() -> None:
    async def main() -> None:
        store = JobStore(capacity=1)
        gate = asyncio.Event()

        async def wait(job: Job) -> ProbeResponse:
            await gate.wait()
            return a_report()

        first = store.submit("probe", ["m"], wait)
        with pytest.raises(TooManyJobs, match="POLYPROBE_MAX_PROBE_JOBS"):
            store.submit("probe", ["m"], wait)
        gate.set()
        assert first.task is not None
        await first.task
        second = store.submit("probe", ["m"], wait)
        with pytest.raises(JobNotFound, match="evicted"):
            store.get(first.id)
        await store.close()  # at shutdown: unfinished jobs are cancelled
        assert store.get(second.id).status == "cancelled"

    anyio.run(main)
