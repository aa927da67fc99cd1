"""HTTP routes of live robustness probes and probe jobs. Glue only: the logic is in `service.probe`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

from anyio import CapacityLimiter, to_thread
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import StreamingResponse

from service.errors import openapi_error_responses
from service.probe import attack, run
from service.probe.attack_spec import refuse_in_comparison
from service.probe.jobs import Job, JobStore
from service.probe.language import InputLanguageDetector
from service.probe.schemas import (
    CompareRequest,
    CompareResponse,
    JobBody,
    JobRequest,
    ProbeRequest,
    ProbeResponse,
)
from service.routes import ready_model
from service.state import ServiceState


@dataclass(frozen=True)
class _ProbeState:
    context: run.ProbeContext
    jobs: JobStore


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Runs inside the app's own lifespan (FastAPI merges router lifespans), after create_app
    # has hung the service state on the app. Building the detector here keeps its ~0.3 s of
    # model loading off the first probe, and a bad language list fails the start, loudly.
    state: ServiceState = app.state.service
    settings = state.settings
    detector = await to_thread.run_sync(InputLanguageDetector, settings.probe_detect_languages)
    context = run.ProbeContext(
        settings,
        state.metrics,
        detector,
        CapacityLimiter(settings.probe_worker_threads),
        engines=state.engines,
    )
    jobs = JobStore(settings.max_probe_jobs)
    app.state.probe = _ProbeState(context, jobs)
    try:
        yield
    finally:
        await jobs.close()


probe_router = APIRouter(lifespan=_lifespan, tags=["robustness"])

_ERRORS = openapi_error_responses(
    (404, "Unknown model or job"),
    (413, "Over the probe's input count or evaluation budget (POLYPROBE_MAX_PROBE_*)"),
    (422, "Invalid input, label, or perturbation spec; the message says what to change"),
    (409, "A newer model version was swapped in during the probe: send it again"),
    (429, "Too many probe jobs unfinished (POLYPROBE_MAX_PROBE_JOBS)"),
    (503, "The model is known but failed to load"),
)


def _probe_state(request: Request) -> _ProbeState:
    state: _ProbeState = request.app.state.probe
    return state


@probe_router.post(
    "/v1/models/{model}/probe",
    response_model=ProbeResponse,
    responses=_ERRORS,
    summary="Robustness of one model under seeded perturbations, per family and language",
)
async def probe_model(model: str, body: ProbeRequest, request: Request) -> ProbeResponse:
    context = _probe_state(request).context
    loaded = ready_model(request, model)
    specs = await run.checked(body, [loaded], context, run.request_limits(context.settings))
    return await attack.probe(loaded, body, specs, context)


@probe_router.post(
    "/v1/probe/compare",
    response_model=CompareResponse,
    responses=_ERRORS,
    summary="Two models on byte-identical perturbed inputs: paired differences and tests",
)
async def compare_models(body: CompareRequest, request: Request) -> CompareResponse:
    context = _probe_state(request).context
    a, b = ready_model(request, body.model_a), ready_model(request, body.model_b)
    refuse_in_comparison(body.perturbations)
    specs = await run.checked(body, [a, b], context, run.request_limits(context.settings))
    return await run.compare(a, b, body, specs, context)


@probe_router.post(
    "/v1/probe/jobs",
    response_model=JobBody,
    status_code=202,
    responses=_ERRORS,
    summary="Run a probe or comparison in the background (in memory: lost on restart)",
)
async def submit_job(body: JobRequest, request: Request, response: Response) -> JobBody:
    state = _probe_state(request)
    context = state.context
    limits = run.job_limits(context.settings)
    job: Job
    if body.model is not None:
        model = ready_model(request, body.model)
        specs = await run.checked(body, [model], context, limits)
        job = state.jobs.submit(
            "probe",
            [model.name],
            lambda job: attack.probe(model, body, specs, context, job.progress, job.set_partial),
        )
    else:
        assert body.model_a is not None and body.model_b is not None  # JobRequest checked it
        a, b = ready_model(request, body.model_a), ready_model(request, body.model_b)
        refuse_in_comparison(body.perturbations)
        specs = await run.checked(body, [a, b], context, limits)
        job = state.jobs.submit(
            "compare",
            [a.name, b.name],
            lambda job: run.compare(a, b, body, specs, context, job.progress, job.set_partial),
        )
    response.headers["Location"] = f"/v1/probe/jobs/{job.id}"
    return job.body()


@probe_router.get(
    "/v1/probe/jobs/{job_id}",
    response_model=JobBody,
    responses={404: _ERRORS[404]},
    summary="A probe job's status, progress and (partial) result",
)
async def get_job(job_id: str, request: Request) -> JobBody:
    return _probe_state(request).jobs.get(job_id).body()


@probe_router.delete(
    "/v1/probe/jobs/{job_id}",
    response_model=JobBody,
    responses={404: _ERRORS[404]},
    summary="Cancel a queued or running probe job (a finished one is left as it is)",
)
async def cancel_job(job_id: str, request: Request) -> JobBody:
    return _probe_state(request).jobs.cancel(job_id).body()


# Progress is mutated inside the probe (partly from worker threads), so it has no hook to wait
# on; the stream checks it at this interval and sends an event only when it changed. The end of
# a job is event-driven (Job.done), so the final event is not delayed by the interval.
_PROGRESS_CHECK_S = 0.2


def _sse(event: str, data: dict[str, object]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _final_event(job: Job) -> str:
    if job.status == "succeeded":
        return _sse("succeeded", {"id": job.id, "location": f"/v1/probe/jobs/{job.id}"})
    if job.status == "failed":
        return _sse("failed", {"id": job.id, "error": job.error or {}})
    return _sse("cancelled", {"id": job.id})


async def _job_events(job: Job, request: Request) -> AsyncIterator[str]:
    last: dict[str, object] | None = None
    while True:
        snapshot: dict[str, object] = {
            "state": job.status,
            **job.body().progress.model_dump(),
        }
        if snapshot != last and not job.finished:
            yield _sse("progress", snapshot)
            last = snapshot
        if job.finished:
            yield _final_event(job)
            return
        if await request.is_disconnected():
            return
        with suppress(TimeoutError):
            await asyncio.wait_for(job.done.wait(), _PROGRESS_CHECK_S)


@probe_router.get(
    "/v1/probe/jobs/{job_id}/events",
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "progress events"},
        404: _ERRORS[404],
    },
    response_class=StreamingResponse,
    summary="Server-sent events of a job's progress, then one final event; the stream ends",
)
async def job_events(job_id: str, request: Request) -> StreamingResponse:
    job = _probe_state(request).jobs.get(job_id)
    return StreamingResponse(
        _job_events(job, request),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store"},
    )
