"""Probe jobs: large probes run in the background, with progress and partial results.

Jobs live in this process's memory: a restart loses them, queued and finished alike, and each
replica of a multi-replica deployment knows only its own. The store keeps at most `capacity`
jobs; a new job evicts the oldest finished one, and is refused (429) while all are unfinished.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from service.errors import ApiError
from service.probe.run import Progress
from service.probe.schemas import CompareResponse, JobBody, JobProgress, ProbeResponse

logger = logging.getLogger(__name__)

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
Report = ProbeResponse | CompareResponse
Work = Callable[["Job"], Awaitable[Report]]


class JobNotFound(ApiError):
    status_code = 404
    error_type = "job_not_found"


class TooManyJobs(ApiError):
    status_code = 429
    error_type = "too_many_jobs"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Job:
    id: str
    kind: Literal["probe", "compare"]
    models: list[str]
    created_at: datetime = field(default_factory=_now)
    status: JobStatus = "queued"
    progress: Progress = field(default_factory=Progress)
    result: Report | None = None
    partial: bool = False
    error: dict[str, str] | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    task: asyncio.Task[None] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def finished(self) -> bool:
        return self.status in ("succeeded", "failed", "cancelled")

    def set_partial(self, report: Report) -> None:
        self.result, self.partial = report, True

    def body(self) -> JobBody:
        progress = self.progress
        return JobBody(
            id=self.id,
            kind=self.kind,
            models=self.models,
            status=self.status,
            created_at=self.created_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            progress=JobProgress(
                phase=progress.phase,
                evaluations_done=progress.evaluations_done,
                evaluations_total=progress.evaluations_total,
                perturbations_done=progress.perturbations_done,
                perturbations_total=progress.perturbations_total,
            ),
            partial=self.partial,
            result=self.result,
            error=self.error,
        )


class JobStore:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._jobs: dict[str, Job] = {}  # insertion order = age

    def submit(self, kind: Literal["probe", "compare"], models: list[str], work: Work) -> Job:
        self._make_room()
        job = Job(id=uuid.uuid4().hex, kind=kind, models=models)
        self._jobs[job.id] = job
        job.task = asyncio.get_running_loop().create_task(self._run(job, work))
        return job

    def get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFound(
                f"no probe job {job_id!r}: it never existed, was evicted to make room for "
                "newer jobs, or the server restarted (jobs live in memory)"
            )
        return job

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job; a finished one is left as it is."""
        job = self.get(job_id)
        if not job.finished and job.task is not None:
            job.task.cancel()
            # Mark it now so the reply says so; the task stops at its next await (a model call
            # already running in a worker thread completes first).
            self._finish(job, "cancelled")
        return job

    async def close(self) -> None:
        """Cancel every unfinished job (at shutdown) and wait for their tasks to stop."""
        unfinished = [job for job in self._jobs.values() if not job.finished]
        for job in unfinished:
            self.cancel(job.id)
        await asyncio.gather(*(j.task for j in unfinished if j.task), return_exceptions=True)

    def _make_room(self) -> None:
        if len(self._jobs) < self.capacity:
            return
        oldest_finished = next((j for j in self._jobs.values() if j.finished), None)
        if oldest_finished is None:
            raise TooManyJobs(
                f"{len(self._jobs)} probe jobs are queued or running, the most this server keeps "
                "(POLYPROBE_MAX_PROBE_JOBS): wait for one to finish or cancel one"
            )
        del self._jobs[oldest_finished.id]

    def _finish(self, job: Job, status: JobStatus) -> None:
        if job.finished:
            return
        job.status, job.finished_at = status, _now()
        job.done.set()

    async def _run(self, job: Job, work: Work) -> None:
        job.status, job.started_at = "running", _now()
        try:
            report = await work(job)
        except asyncio.CancelledError:
            self._finish(job, "cancelled")
            raise
        except ApiError as error:
            job.error = {"type": error.error_type, "message": error.message}
            self._finish(job, "failed")
        except Exception:
            logger.exception("probe job %s failed", job.id)
            job.error = {
                "type": "internal",
                "message": "internal error; the server log has details",
            }
            self._finish(job, "failed")
        else:
            job.result, job.partial = report, False
            self._finish(job, "succeeded")
