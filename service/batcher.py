"""Dynamic batching: one queue and one worker per served model, batches formed under a token budget.

Requests (each with one or many inputs) are tokenized on arrival, off the event loop, so every
queued input has an exact token count. One worker per model forms each batch from the oldest
waiting input plus the waiting inputs nearest to it in length, under a budget of *padded* tokens
(batch size x longest input) and a maximum batch size, runs it in a thread and hands each row back
to the request it came from, in the request's order. Up to POLYPROBE_INFERENCE_STREAMS batches run
at once on the model's one session, a new batch formed whenever a stream comes free. Prediction
traffic always goes before probe traffic. The event loop only moves data between requests and the
worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from anyio import CapacityLimiter, to_thread
from export.features import TextPair

from service.backend import CUDA
from service.errors import (
    ClientClosedRequest,
    DeadlineExceeded,
    ModelReplaced,
    ModelUnavailable,
    Overloaded,
    PayloadTooLarge,
)
from service.inference import EncodedInput, InputEncoder, padded_length, to_predictions
from service.metrics import ServiceMetrics
from service.repository import LoadedModel
from service.schemas import Prediction
from service.settings import Settings

logger = logging.getLogger(__name__)


class Priority(IntEnum):
    """Lower value runs first; a batch never mixes priorities."""

    PREDICT = 0
    PROBE = 1


@dataclass(frozen=True)
class Candidate:
    """A queued input as batch forming sees it: arrival order and token count."""

    seq: int
    length: int


# Token budgets when POLYPROBE_BATCH_MAX_TOKENS is unset. On CPU every padded token costs
# FLOPs and a large batch is no faster per token, so beyond ~512 batching loses to per-request
# inference (e5-small sweep in bench/RESULTS.md: 1.22x at 512, 0.85x at 4096). A GPU is
# latency-bound at small batches and keeps gaining up to a few thousand tokens.
CPU_TOKEN_BUDGET = 512
CUDA_TOKEN_BUDGET = 4096


def default_token_budget(provider: str) -> int:
    """The batch token budget that suits an ONNX Runtime execution provider."""
    return CUDA_TOKEN_BUDGET if provider == CUDA else CPU_TOKEN_BUDGET


def batch_cost(lengths: Sequence[int], multiple: int = 1) -> int:
    """Padded tokens of a batch: every row is as long as the longest one."""
    return len(lengths) * padded_length(max(lengths), multiple) if lengths else 0


def form_batch(
    candidates: Sequence[Candidate], *, max_tokens: int, max_size: int, multiple: int = 1
) -> list[int]:
    """Indices (into `candidates`) of the next batch, in row order (shortest first).

    The oldest candidate is always in the batch, so no input starves however long it is (alone,
    it may exceed `max_tokens`: it still has to run). The batch then grows by the candidate
    nearest in length to that oldest one, on either side, while `max_size` and `max_tokens`
    (padded tokens, `batch_cost`) hold; similar lengths together keep padding low.
    """
    if not candidates:
        return []
    order = sorted(range(len(candidates)), key=lambda i: (candidates[i].length, candidates[i].seq))
    anchor = min(range(len(order)), key=lambda pos: candidates[order[pos]].seq)
    anchor_length = candidates[order[anchor]].length
    chosen = [order[anchor]]
    longest = anchor_length
    below, above = anchor - 1, anchor + 1
    while len(chosen) < max_size and (below >= 0 or above < len(order)):
        take_below = above >= len(order) or (
            below >= 0
            and anchor_length - candidates[order[below]].length
            <= candidates[order[above]].length - anchor_length
        )
        position = below if take_below else above
        grown = max(longest, candidates[order[position]].length)
        if (len(chosen) + 1) * padded_length(grown, multiple) > max_tokens:
            if take_below:
                break  # a shorter input does not fit, so a longer one cannot either
            above = len(order)  # no longer input fits; shorter ones still may
            continue
        chosen.append(order[position])
        longest = grown
        if take_below:
            below -= 1
        else:
            above += 1
    return sorted(chosen, key=lambda i: (candidates[i].length, candidates[i].seq))


def warmup_lengths(max_length: int, multiple: int) -> list[int]:
    """Padded lengths to run once before serving.

    With padding to multiples of 8 (CUDA) there are few distinct shapes and each gets its own
    kernels, so all of them run. The CPU pads to the exact longest input; its kernels do not
    depend on the length, so powers of two (and the maximum) grow the memory arena and touch
    every code path.
    """
    if multiple > 1:
        lengths = list(range(multiple, max_length + 1, multiple))
    else:
        lengths = [2**p for p in range(3, max_length.bit_length()) if 2**p < max_length]
    if not lengths or lengths[-1] != max_length:
        lengths.append(max_length)
    return lengths


@dataclass
class StageTimes:
    """What one request spent where, for the response headers (seconds)."""

    tokenize_s: float = 0.0
    queue_s: float = 0.0  # until its last input started running
    inference_s: float = 0.0  # summed over the batches that carried its inputs
    batch_size: int = 0  # the largest batch that carried one of its inputs

    def headers(self) -> dict[str, str]:
        return {
            "x-tokenize-time": f"{self.tokenize_s * 1000:.3f}",
            "x-queue-time": f"{self.queue_s * 1000:.3f}",
            "x-inference-time": f"{self.inference_s * 1000:.3f}",
            "x-batch-size": str(self.batch_size),
        }


@dataclass
class EngineResult:
    predictions: list[Prediction]
    times: StageTimes


@dataclass(eq=False)
class _Request:
    inputs: list[EncodedInput]
    priority: Priority
    enqueued: float
    done: asyncio.Future[None]
    times: StageTimes
    results: list[Prediction | None] = field(default_factory=list)
    remaining: int = 0
    cancelled: bool = False

    @property
    def tokens(self) -> int:
        return sum(item.length for item in self.inputs)


@dataclass(eq=False)
class _Queued:
    request: _Request
    index: int
    candidate: Candidate


class ModelEngine:
    """The batcher of one loaded model: its queue, its worker and its inference streams."""

    def __init__(
        self,
        model: LoadedModel,
        settings: Settings,
        metrics: ServiceMetrics,
        encoder: InputEncoder | None = None,
    ) -> None:
        self.model = model
        self._settings = settings
        self._metrics = metrics
        self._multiple = 8 if model.backend.provider == CUDA else 1
        self._max_tokens = settings.batch_max_tokens or default_token_budget(model.backend.provider)
        self._encoder = encoder or InputEncoder.from_bundle(
            model, pad_to_multiple_of=self._multiple
        )
        self._queues: dict[Priority, list[_Queued]] = {p: [] for p in Priority}
        self._queued_tokens = dict.fromkeys(Priority, 0)
        self._seq = 0
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        # Each stream is one batch running in its own thread on the shared session.
        self._streams = settings.inference_streams
        self._free_streams = asyncio.Semaphore(self._streams)
        self._inference_threads = CapacityLimiter(self._streams)
        self._running: set[asyncio.Task[Any]] = set()
        self._tokens_per_second = 0.0  # recent throughput, for Retry-After
        self._retiring = False
        # Every series this engine writes, looked up once: `labels()` locks and hashes per call.
        name, version = model.name, model.version
        self._queue_depth = {p: metrics.queue_depth.labels(name, p.name.lower()) for p in Priority}
        self._queue_wait = {
            p: metrics.queue_wait_duration.labels(name, p.name.lower()) for p in Priority
        }
        self._queue_tokens = metrics.queue_tokens.labels(name)
        self._in_flight = metrics.in_flight_requests.labels(name)
        self._tokenize_duration = metrics.tokenize_duration.labels(name, version)
        self._inference_duration = metrics.inference_duration.labels(name, version)
        self._batch_size = metrics.batch_size.labels(name)
        self._batch_tokens = metrics.batch_tokens.labels(name)
        self._padding_ratio = metrics.padding_ratio.labels(name)
        self._truncated_inputs = metrics.truncated_inputs.labels(name)

    # -- lifecycle -------------------------------------------------------------------------

    def warm_up(self) -> list[int]:
        """Blocking: run one input of every length bucket; returns the lengths run."""
        lengths = warmup_lengths(self.model.manifest.max_sequence_length, self._multiple)
        for length in lengths:
            began = time.perf_counter()
            self.model.backend.run(self._encoder.dummy_feeds(length))
            self._metrics.warmup_batches.labels(self.model.name).inc()
            logger.debug("warm-up %s length %d: %.1f ms", self.model.name, length,
                         (time.perf_counter() - began) * 1000)  # fmt: skip
        return lengths

    def start(self) -> None:
        """Start the worker; call from the event loop that will serve requests."""
        if self._worker is None:
            logger.info(
                "batcher %s: up to %d inputs or %d padded tokens per batch on %s",
                self.model.name, self._settings.inference_batch_size, self._max_tokens,
                self.model.backend.provider,
            )  # fmt: skip
            self._worker = asyncio.get_running_loop().create_task(
                self._work(), name=f"batcher-{self.model.name}"
            )

    async def retire(self) -> None:
        """Answer what is queued, then stop: a newer version of the model has taken over."""
        self._retiring = True
        self._wakeup.set()
        if self._worker is not None:
            await asyncio.shield(self._worker)
        await self.close()

    async def close(self) -> None:
        """Stop the worker; batches already running finish, whatever still waits is answered 503."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        await asyncio.gather(*self._running, return_exceptions=True)
        for queue in self._queues.values():
            for request in {id(q.request): q.request for q in queue}.values():
                self._fail(request, ModelUnavailable(f"model {self.model.name} is shutting down"))
            queue.clear()
        self._publish_queue()

    # -- the request side ------------------------------------------------------------------

    async def predict(
        self,
        pairs: Sequence[TextPair],
        priority: Priority = Priority.PREDICT,
        *,
        until_disconnected: Callable[[], Awaitable[None]] | None = None,
    ) -> EngineResult:
        """Predictions for `pairs`, in order, with the time spent in each stage.

        Prediction priority has a deadline (POLYPROBE_REQUEST_TIMEOUT_MS -> 503) and a bounded
        queue (POLYPROBE_MAX_QUEUE_TOKENS -> 429); probes wait behind predictions instead.
        When `until_disconnected` returns first, the request's queued inputs are dropped.
        """
        began = time.perf_counter()
        timeout_ms = self._settings.request_timeout_ms if priority == Priority.PREDICT else 0
        deadline = began + timeout_ms / 1000 if timeout_ms else None
        inputs = await to_thread.run_sync(self._encoder.encode, pairs)
        tokenized = time.perf_counter()
        tokenize_s = tokenized - began
        self._tokenize_duration.observe(tokenize_s)
        self._check_overlength(inputs)
        if deadline is not None and tokenized >= deadline:
            raise self._deadline_error(timeout_ms)
        if (
            priority == Priority.PREDICT
            and self._fits_one_batch(inputs)
            and await self._claim_idle_stream()
        ):
            return await self._run_now(inputs, tokenize_s, deadline, timeout_ms, until_disconnected)
        request = self._admit(inputs, priority, StageTimes(tokenize_s=tokenize_s))
        self._in_flight.inc()
        try:
            await self._wait(request.done, deadline, timeout_ms, until_disconnected)
        finally:
            self._in_flight.dec()
            if not request.done.done() or request.done.cancelled():
                self._cancel(request)
        results = [r for r in request.results if r is not None]
        return EngineResult(results, request.times)

    def _fits_one_batch(self, inputs: Sequence[EncodedInput]) -> bool:
        lengths = [item.length for item in inputs]
        return len(inputs) <= self._settings.inference_batch_size and (
            batch_cost(lengths, self._multiple) <= self._max_tokens
        )

    async def _claim_idle_stream(self) -> bool:
        """Take a free stream for a request that finds nothing queued (never waits)."""
        idle = not self._retiring and self._worker is not None and not any(self._queues.values())
        if not idle or self._free_streams.locked():
            return False
        await self._free_streams.acquire()  # free, so this returns at once
        return True

    async def _run_now(
        self,
        inputs: list[EncodedInput],
        tokenize_s: float,
        deadline: float | None,
        timeout_ms: int,
        until_disconnected: Callable[[], Awaitable[None]] | None,
    ) -> EngineResult:
        """Run a request that found the engine idle as one batch on the stream it claimed,
        straight from the request: no trip through the queue and the worker. The stream is
        released when the thread is done, even after the request gave up waiting."""
        order = sorted(range(len(inputs)), key=lambda i: inputs[i].length)
        run = asyncio.get_running_loop().create_task(
            to_thread.run_sync(
                self._infer, [inputs[i] for i in order], limiter=self._inference_threads
            )
        )
        self._running.add(run)
        run.add_done_callback(self._stream_done)
        self._in_flight.inc()
        try:
            await self._wait(run, deadline, timeout_ms, until_disconnected)
        finally:
            self._in_flight.dec()
        sorted_predictions, seconds = run.result()
        by_index = dict(zip(order, sorted_predictions, strict=True))
        predictions = [by_index[index] for index in range(len(inputs))]
        for _ in inputs:
            self._queue_wait[Priority.PREDICT].observe(0.0)
        self._record_batch(inputs, seconds)
        times = StageTimes(tokenize_s=tokenize_s, inference_s=seconds, batch_size=len(inputs))
        return EngineResult(predictions, times)

    async def _wait(
        self,
        done: asyncio.Future[Any],
        deadline: float | None,
        timeout_ms: int,
        until_disconnected: Callable[[], Awaitable[None]] | None,
    ) -> None:
        waiting: set[asyncio.Future[Any]] = {done}
        watcher = None
        if until_disconnected is not None:
            watcher = asyncio.ensure_future(until_disconnected())
            waiting.add(watcher)
        timeout = None if deadline is None else max(0.0, deadline - time.perf_counter())
        try:
            await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if watcher is not None:
                watcher.cancel()
        if done.done():
            done.result()  # raises the worker's error, if any
            return
        if watcher is not None and watcher.done():
            raise ClientClosedRequest("the client closed the connection before the answer")
        raise self._deadline_error(timeout_ms)

    def _deadline_error(self, timeout_ms: int) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"model {self.model.name} could not answer within {timeout_ms} ms "
            "(POLYPROBE_REQUEST_TIMEOUT_MS): the server is overloaded; retry later or send fewer inputs",
            headers={"retry-after": str(self._retry_after())},
        )

    def _check_overlength(self, inputs: Sequence[EncodedInput]) -> None:
        if self._settings.on_overlength != "reject":
            return
        too_long = [i for i, item in enumerate(inputs) if item.truncated]
        if too_long:
            raise PayloadTooLarge(
                f"inputs {too_long} exceed model {self.model.name}'s max sequence length of "
                f"{self.model.manifest.max_sequence_length} tokens: shorten them (or let the "
                "server truncate them with POLYPROBE_ON_OVERLENGTH=truncate)"
            )

    def _admit(self, inputs: list[EncodedInput], priority: Priority, times: StageTimes) -> _Request:
        if self._retiring or self._worker is None:
            raise ModelUnavailable(f"model {self.model.name} is being replaced: retry")
        loop = asyncio.get_running_loop()
        request = _Request(inputs, priority, time.perf_counter(), loop.create_future(), times)
        request.results = [None] * len(inputs)
        request.remaining = len(inputs)
        queued = self._queued_tokens[priority]
        # Probe work is bounded by its own limiter; only predictions can overfill the queue.
        # A request larger than the whole bound still runs when nothing else waits.
        limit = self._settings.max_queue_tokens
        if priority == Priority.PREDICT and queued and queued + request.tokens > limit:
            raise Overloaded(
                f"model {self.model.name} has {queued} tokens queued; this request's "
                f"{request.tokens} would exceed POLYPROBE_MAX_QUEUE_TOKENS={limit}: retry later",
                headers={"retry-after": str(self._retry_after())},
            )
        queue = self._queues[priority]
        for index, item in enumerate(inputs):
            queue.append(_Queued(request, index, Candidate(self._seq, item.length)))
            self._seq += 1
        self._queued_tokens[priority] += request.tokens
        self._publish_queue()
        self._wakeup.set()
        return request

    def _cancel(self, request: _Request) -> None:
        """Drop the request's inputs that have not run yet; rows already running are ignored."""
        request.cancelled = True
        queue = self._queues[request.priority]
        kept = [q for q in queue if q.request is not request]
        dropped = len(queue) - len(kept)
        if dropped:
            self._queued_tokens[request.priority] -= sum(
                q.candidate.length for q in queue if q.request is request
            )
            queue[:] = kept
            self._publish_queue()

    def _retry_after(self) -> int:
        """Seconds until the queued tokens are likely worked off (at least 1)."""
        tokens = sum(self._queued_tokens.values())
        if self._tokens_per_second <= 0:
            return 1
        return max(1, math.ceil(tokens / (self._tokens_per_second * self._streams)))

    def _publish_queue(self) -> None:
        for priority, queue in self._queues.items():
            self._queue_depth[priority].set(len(queue))
        self._queue_tokens.set(sum(self._queued_tokens.values()))

    # -- the worker ------------------------------------------------------------------------

    def _next_queue(self) -> list[_Queued] | None:
        for priority in Priority:
            if self._queues[priority]:
                return self._queues[priority]
        return None

    def _is_full(self, queue: list[_Queued]) -> bool:
        settings = self._settings
        if len(queue) >= settings.inference_batch_size:
            return True
        lengths = [q.candidate.length for q in queue]
        return batch_cost(lengths, self._multiple) >= self._max_tokens

    async def _work(self) -> None:
        idle = True
        wait_s = self._settings.batch_wait_ms / 1000
        while True:
            # A batch is formed only when a stream is free to run it, from what waits by then.
            await self._free_streams.acquire()
            queue = self._next_queue()
            if queue is None:
                self._free_streams.release()
                if self._retiring:
                    await asyncio.gather(*self._running, return_exceptions=True)
                    return
                idle = True
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            # Under load (a stream just came free and inputs wait), give a short batch a few ms
            # to fill, counted from its oldest input's arrival; never when idle.
            if not idle and wait_s > 0:
                fill_by = queue[0].request.enqueued + wait_s
                while not self._is_full(queue) and (left := fill_by - time.perf_counter()) > 0:
                    self._wakeup.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), left)
                    if self._next_queue() is not queue:
                        break
                queue = self._next_queue()
                if queue is None:
                    self._free_streams.release()
                    continue
            idle = False
            run = asyncio.get_running_loop().create_task(self._run_batch(self._take(queue)))
            self._running.add(run)
            run.add_done_callback(self._stream_done)

    def _stream_done(self, run: asyncio.Task[Any]) -> None:
        self._running.discard(run)
        self._free_streams.release()
        if not run.cancelled() and (error := run.exception()) is not None:
            logger.error("inference on model %s failed", self.model.name, exc_info=error)

    def _take(self, queue: list[_Queued]) -> list[_Queued]:
        settings = self._settings
        # Forming looks at the oldest inputs only, which bounds its cost under a deep queue.
        window = queue[: 8 * settings.inference_batch_size]
        picked = form_batch(
            [q.candidate for q in window],
            max_tokens=self._max_tokens,
            max_size=settings.inference_batch_size,
            multiple=self._multiple,
        )
        batch = [window[i] for i in picked]
        taken = {id(q) for q in batch}
        queue[:] = [q for q in queue if id(q) not in taken]
        priority = batch[0].request.priority
        self._queued_tokens[priority] -= sum(q.candidate.length for q in batch)
        self._publish_queue()
        return batch

    async def _run_batch(self, batch: list[_Queued]) -> None:
        name = self.model.name
        started = time.perf_counter()
        queue_wait = self._queue_wait[batch[0].request.priority]
        for queued in batch:
            queue_wait.observe(started - queued.request.enqueued)
        inputs = [q.request.inputs[q.index] for q in batch]
        try:
            predictions, seconds = await to_thread.run_sync(
                self._infer, inputs, limiter=self._inference_threads
            )
        except Exception as exc:  # a failed batch fails its requests, not the worker
            logger.exception("batch of %d on model %s failed", len(batch), name)
            for request in {id(q.request): q.request for q in batch}.values():
                self._fail(request, exc)
            return
        self._record_batch(inputs, seconds)
        touched: dict[int, _Request] = {}
        for queued, prediction in zip(batch, predictions, strict=True):
            request = queued.request
            if request.cancelled:
                continue
            request.results[queued.index] = prediction
            request.remaining -= 1
            if id(request) not in touched:
                touched[id(request)] = request
                request.times.queue_s = max(request.times.queue_s, started - request.enqueued)
                request.times.inference_s += seconds
                request.times.batch_size = max(request.times.batch_size, len(batch))
        for request in touched.values():
            if request.remaining == 0 and not request.done.done():
                request.done.set_result(None)

    def _record_batch(self, inputs: Sequence[EncodedInput], seconds: float) -> None:
        lengths = [item.length for item in inputs]
        if truncated := sum(item.truncated for item in inputs):
            self._truncated_inputs.inc(truncated)
        padded = batch_cost(lengths, self._multiple)
        self._batch_size.observe(len(lengths))
        self._batch_tokens.observe(padded)
        self._padding_ratio.observe(1 - sum(lengths) / padded)
        self._inference_duration.observe(seconds)
        if seconds > 0:
            rate = padded / seconds
            self._tokens_per_second = rate if not self._tokens_per_second else (
                0.8 * self._tokens_per_second + 0.2 * rate
            )  # fmt: skip

    def _infer(self, inputs: Sequence[EncodedInput]) -> tuple[list[Prediction], float]:
        """In the stream's thread: collate, run, and turn the logits into predictions."""
        feeds = self._encoder.collate(inputs)
        began = time.perf_counter()
        logits = self.model.backend.run(feeds)
        seconds = time.perf_counter() - began
        labels = self.model.manifest.labels
        truncated = [item.truncated for item in inputs]
        lengths = [item.length for item in inputs]
        return to_predictions(logits, labels, truncated, lengths), seconds

    @staticmethod
    def _fail(request: _Request, error: BaseException) -> None:
        if not request.done.done():
            request.done.set_exception(error)


@dataclass
class Engines:
    """The engine of every served model, by name."""

    settings: Settings
    metrics: ServiceMetrics
    by_name: dict[str, ModelEngine] = field(default_factory=dict)

    _retirements: set[asyncio.Task[None]] = field(default_factory=set)

    async def add(self, model: LoadedModel) -> list[int]:
        """Warm the model up (off the loop), then serve it; returns the lengths warmed.

        An engine of an older version of the same name answers what it has queued, then stops.
        """
        engine = ModelEngine(model, self.settings, self.metrics)
        lengths = await to_thread.run_sync(engine.warm_up)
        self._install(engine)
        return lengths

    def get(self, model: LoadedModel) -> ModelEngine:
        """The engine of `model`; one is started (cold) for a model that was swapped in
        without `add`, so predictions never depend on who loaded the model.

        A version older than the one served (a probe's later batches after a swap) is refused:
        starting an engine for it would displace the newer version's, and each would keep
        displacing the other.
        """
        engine = self.by_name.get(model.name)
        if engine is not None and engine.model is model:
            return engine
        if engine is not None and model.load_order < engine.model.load_order:
            served = engine.model.version
            raise ModelReplaced(
                f"model {model.name} version {model.version} was replaced by version {served} "
                "while this request used it; one answer must come from one version, so it stops "
                f"here: send it again to run it on version {served}"
            )
        logger.warning("model %s %s serves without warm-up", model.name, model.version)
        engine = ModelEngine(model, self.settings, self.metrics)
        self._install(engine)
        return engine

    def _install(self, engine: ModelEngine) -> None:
        engine.start()
        previous = self.by_name.get(engine.model.name)
        self.by_name[engine.model.name] = engine
        if previous is not None:
            task = asyncio.get_running_loop().create_task(previous.retire())
            self._retirements.add(task)
            task.add_done_callback(self._retirements.discard)

    async def close(self) -> None:
        await asyncio.gather(*self._retirements)
        for engine in self.by_name.values():
            await engine.close()
        self.by_name.clear()
