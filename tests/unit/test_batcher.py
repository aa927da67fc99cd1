"""The batcher: batch forming as a pure function with exact expectations, then the engine's queue,
worker, priorities, cancellation and deadlines with a recording backend and a real tokenizer."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from types import SimpleNamespace

import numpy as np
import pytest
from tokenizers import Tokenizer, pre_tokenizers
from tokenizers.models import WordLevel

from export.features import TextPair
from service.backend import intra_op_threads
from service.batcher import (
    Candidate,
    EngineResult,
    ModelEngine,
    Priority,
    StageTimes,
    batch_cost,
    default_token_budget,
    form_batch,
    warmup_lengths,
)
from service.errors import DeadlineExceeded, Overloaded, PayloadTooLarge
from service.inference import InputEncoder, padded_length
from service.metrics import ServiceMetrics
from service.settings import Settings

# -- form_batch ------------------------------------------------------------------------------


def candidates(*lengths: int) -> list[Candidate]:
    """Candidates arriving in the order given."""
    return [Candidate(seq, length) for seq, length in enumerate(lengths)]


def test_an_empty_queue_forms_no_batch() -> None:
    assert form_batch([], max_tokens=100, max_size=8) == []


def test_everything_fits_in_one_batch_shortest_first() -> None:
    assert form_batch(candidates(5, 2, 9, 2), max_tokens=100, max_size=8) == [1, 3, 0, 2]


def test_the_oldest_input_always_runs_with_its_nearest_lengths() -> None:
    # Oldest has 10 tokens; 9 and 11 are nearest; 4 x 11 = 44 <= 45 but a fifth row would not fit.
    queue = candidates(10, 2, 9, 30, 11, 3)
    assert form_batch(queue, max_tokens=45, max_size=8) == [5, 2, 0, 4]


def test_padded_tokens_never_exceed_the_budget() -> None:
    # Oldest has 7 tokens: the other 7, then 6 (nearer than 8), then neither 8 (4 x 8) nor 5 fits.
    queue = candidates(7, 3, 8, 8, 1, 6, 5, 2, 4, 7)
    picked = form_batch(queue, max_tokens=24, max_size=10)
    assert picked == [5, 0, 9]
    assert batch_cost([queue[i].length for i in picked]) == 3 * 7


def test_the_batch_size_limit_holds() -> None:
    assert form_batch(candidates(4, 4, 4, 4, 4), max_tokens=1000, max_size=3) == [0, 1, 2]


def test_a_long_input_alone_over_the_budget_still_runs() -> None:
    assert form_batch(candidates(500, 3, 3), max_tokens=64, max_size=8) == [0]


def test_long_inputs_are_not_starved_by_a_stream_of_short_ones() -> None:
    # Four short inputs arrive after every batch; the long one runs as soon as it is the oldest.
    queue = candidates(2, 2, 120, 2, 2, 2, 2)
    arrivals = iter(range(len(queue), 100))
    served: list[list[int]] = []
    for _ in range(3):
        picked = form_batch(queue, max_tokens=128, max_size=4)
        served.append(sorted(queue[i].seq for i in picked))
        queue = [c for i, c in enumerate(queue) if i not in picked]
        queue += [Candidate(next(arrivals), 2) for _ in range(4)]
    assert served == [[0, 1, 3, 4], [2], [5, 6, 7, 8]]


def test_multiples_of_8_count_in_the_budget() -> None:
    # Lengths 9 and 10 pad to 16 on a GPU: three rows cost 48 > 40, two cost 32.
    assert form_batch(candidates(9, 10, 9), max_tokens=40, max_size=8, multiple=8) == [0, 2]
    assert form_batch(candidates(9, 10, 9), max_tokens=40, max_size=8) == [0, 2, 1]
    assert padded_length(9, 8) == 16
    assert padded_length(16, 8) == 16
    assert batch_cost([9, 10], multiple=8) == 32


def test_warmup_lengths_cover_every_bucket() -> None:
    assert warmup_lengths(128, 1) == [8, 16, 32, 64, 128]
    assert warmup_lengths(100, 1) == [8, 16, 32, 64, 100]
    assert warmup_lengths(40, 8) == [8, 16, 24, 32, 40]
    assert warmup_lengths(20, 8) == [8, 16, 20]


def test_stage_times_become_millisecond_headers() -> None:
    times = StageTimes(tokenize_s=0.0012, queue_s=0.0, inference_s=0.25, batch_size=7)
    assert times.headers() == {
        "x-tokenize-time": "1.200",
        "x-queue-time": "0.000",
        "x-inference-time": "250.000",
        "x-batch-size": "7",
    }


# -- the engine ------------------------------------------------------------------------------

WORDS = ["<pad>", "<unk>", "a", "b", "c", "d", "e", "f", "g", "h"]


def encoder(max_length: int = 8) -> InputEncoder:
    raw = Tokenizer(WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    return InputEncoder(raw, max_length=max_length, input_names=["input_ids", "attention_mask"])


class RecordingBackend:
    """Logits [tokens, first id] per row; records every batch; can hold a batch until released."""

    input_names = ("input_ids", "attention_mask")
    provider = "CPUExecutionProvider"

    def __init__(self) -> None:
        self.batches: list[list[list[int]]] = []
        self.running = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        self.running.set()
        self.release.wait(timeout=30)
        ids, mask = feeds["input_ids"], feeds["attention_mask"]
        self.batches.append([row[m == 1].tolist() for row, m in zip(ids, mask, strict=True)])
        return np.stack([mask.sum(axis=1), ids[:, 0]], axis=1).astype(np.float32)


def fake_model(backend: RecordingBackend, max_length: int = 8) -> SimpleNamespace:
    return SimpleNamespace(
        name="m",
        version="1",
        backend=backend,
        manifest=SimpleNamespace(labels=["x", "y"], max_sequence_length=max_length),
    )


@asynccontextmanager
async def running_engine(
    backend: RecordingBackend, max_length: int = 8, **settings: object
) -> AsyncIterator[ModelEngine]:
    config = Settings.model_validate({"batch_wait_ms": 0, **settings})
    model = fake_model(backend, max_length)
    engine = ModelEngine(model, config, ServiceMetrics(), encoder(max_length))  # type: ignore[arg-type]
    engine.start()
    try:
        yield engine
    finally:
        await engine.close()


def texts(*words: str) -> list[TextPair]:
    return [(w, None) for w in words]


async def queued_inputs(engine: ModelEngine, count: int) -> None:
    """Wait (event loop turns, no clock) until `count` inputs wait in the queue."""
    for _ in range(100_000):
        if sum(len(q) for q in engine._queues.values()) >= count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{count} inputs never queued")


async def hold_the_worker(
    engine: ModelEngine, backend: RecordingBackend
) -> asyncio.Task[EngineResult]:
    """Start a one-input request and keep its batch running until `backend.release` is set."""
    backend.release.clear()
    blocker = asyncio.create_task(engine.predict(texts("h")))
    await asyncio.to_thread(backend.running.wait, 30)
    return blocker


def test_results_come_back_in_request_order() -> None:
    backend = RecordingBackend()

    async def main() -> EngineResult:
        async with running_engine(backend) as engine:
            return await engine.predict(texts("a b c", "d", "e f"))

    result = asyncio.run(main())
    assert [p.num_tokens for p in result.predictions] == [3, 1, 2]
    assert backend.batches == [[[5], [6, 7], [2, 3, 4]]]  # one batch, shortest first
    assert result.times.batch_size == 3


def test_queued_requests_batch_together_under_the_budget_and_get_their_own_rows() -> None:
    backend = RecordingBackend()

    async def main() -> list[EngineResult]:
        async with running_engine(backend, batch_max_tokens=6, inference_batch_size=8) as engine:
            blocker = await hold_the_worker(engine, backend)
            first = asyncio.create_task(engine.predict(texts("a a", "b")))
            await queued_inputs(engine, 2)
            second = asyncio.create_task(engine.predict(texts("c c c", "d d")))
            await queued_inputs(engine, 4)
            backend.release.set()
            return [await blocker, await first, await second]

    _, first, second = asyncio.run(main())
    # Oldest "a a" anchors: with "b" and "d d" it costs 3 x 2 = 6; "c c c" waits for the next.
    assert backend.batches[1:] == [[[3], [2, 2], [5, 5]], [[4, 4, 4]]]
    assert all(batch_cost([len(r) for r in batch]) <= 6 for batch in backend.batches)
    assert [p.num_tokens for p in first.predictions] == [2, 1]
    assert [p.num_tokens for p in second.predictions] == [3, 2]
    assert [p.probabilities["y"] > 0.5 for p in second.predictions] == [True, True]  # first id 4, 5


def test_predictions_go_before_probes_queued_earlier() -> None:
    backend = RecordingBackend()

    async def main() -> None:
        async with running_engine(backend) as engine:
            blocker = await hold_the_worker(engine, backend)
            probe = asyncio.create_task(engine.predict(texts("a"), Priority.PROBE))
            await queued_inputs(engine, 1)
            prediction = asyncio.create_task(engine.predict(texts("b")))
            await queued_inputs(engine, 2)
            backend.release.set()
            await asyncio.gather(blocker, probe, prediction)

    asyncio.run(main())
    assert backend.batches == [[[9]], [[3]], [[2]]]  # never mixed, prediction first


def test_probe_work_never_fills_the_prediction_queue() -> None:
    backend = RecordingBackend()

    async def main() -> str:
        async with running_engine(backend, max_queue_tokens=2) as engine:
            blocker = await hold_the_worker(engine, backend)
            probe = asyncio.create_task(engine.predict(texts("a a a", "b b"), Priority.PROBE))
            await queued_inputs(engine, 2)
            first = asyncio.create_task(engine.predict(texts("c c")))  # fits: queue empty
            await queued_inputs(engine, 3)
            with pytest.raises(Overloaded) as refused:
                await engine.predict(texts("d"))
            backend.release.set()
            await asyncio.gather(blocker, probe, first)
            return refused.value.headers["retry-after"]

    assert asyncio.run(main()) == "1"
    assert backend.batches[1:] == [[[4, 4]], [[3, 3], [2, 2, 2]]]


def test_cancelled_requests_are_dropped_never_run() -> None:
    backend = RecordingBackend()

    async def main() -> None:
        async with running_engine(backend) as engine:
            blocker = await hold_the_worker(engine, backend)
            gone = asyncio.get_running_loop().create_future()
            leaving = asyncio.create_task(
                engine.predict(texts("a", "a a"), until_disconnected=lambda: gone)
            )
            await queued_inputs(engine, 2)
            staying = asyncio.create_task(engine.predict(texts("b")))
            await queued_inputs(engine, 3)
            gone.set_result(None)  # the client hangs up while its inputs wait
            with pytest.raises(Exception, match="closed the connection"):
                await leaving
            assert sum(len(q) for q in engine._queues.values()) == 1
            backend.release.set()
            await asyncio.gather(blocker, staying)

    asyncio.run(main())
    assert backend.batches == [[[9]], [[3]]]


def test_a_missed_deadline_is_a_503_and_its_inputs_never_run() -> None:
    backend = RecordingBackend()

    async def main() -> None:
        async with running_engine(backend, request_timeout_ms=1) as engine:
            backend.release.clear()
            blocker = asyncio.create_task(engine.predict(texts("h"), Priority.PROBE))
            await asyncio.to_thread(backend.running.wait, 30)
            with pytest.raises(DeadlineExceeded, match="within 1 ms"):
                await engine.predict(texts("a b"))
            assert sum(len(q) for q in engine._queues.values()) == 0
            backend.release.set()
            await blocker

    asyncio.run(main())
    assert backend.batches == [[[9]]]


def test_reject_mode_refuses_overlength_inputs_before_queueing() -> None:
    backend = RecordingBackend()

    async def main() -> None:
        async with running_engine(backend, on_overlength="reject") as engine:
            with pytest.raises(PayloadTooLarge, match=r"inputs \[1\] exceed"):
                await engine.predict(texts("a", "a b c d e f g h a"))

    asyncio.run(main())
    assert backend.batches == []


def test_a_failing_batch_fails_its_requests_and_the_worker_goes_on() -> None:
    class Flaky(RecordingBackend):
        def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
            if not self.batches:
                self.batches.append([])
                raise RuntimeError("device lost")
            return super().run(feeds)

    backend = Flaky()

    async def main() -> EngineResult:
        async with running_engine(backend) as engine:
            with pytest.raises(RuntimeError, match="device lost"):
                await engine.predict(texts("a"))
            return await engine.predict(texts("b b"))

    assert [p.num_tokens for p in asyncio.run(main()).predictions] == [2]


def test_warm_up_runs_every_length_bucket_once() -> None:
    backend = RecordingBackend()
    config = Settings()
    engine = ModelEngine(fake_model(backend, max_length=32), config, ServiceMetrics(), encoder(32))  # type: ignore[arg-type]
    assert engine.warm_up() == [8, 16, 32]
    assert [len(batch[0]) for batch in backend.batches] == [8, 16, 32]


def test_encoder_pads_a_batch_to_its_longest_and_to_multiples_of_8() -> None:
    def widths(multiple: int, inputs: Sequence[str]) -> tuple[int, ...]:
        raw = Tokenizer(WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
        raw.pre_tokenizer = pre_tokenizers.Whitespace()
        enc = InputEncoder(
            raw, max_length=16, input_names=["input_ids"], pad_to_multiple_of=multiple
        )
        return tuple(enc.collate(enc.encode(texts(*inputs)))["input_ids"].shape)

    assert widths(1, ["a b c", "d"]) == (2, 3)
    assert widths(8, ["a b c", "d"]) == (2, 8)
    assert widths(8, ["a " * 9]) == (1, 16)


def test_the_default_token_budget_depends_on_the_execution_provider() -> None:
    assert default_token_budget("CPUExecutionProvider") == 512
    assert default_token_budget("CUDAExecutionProvider") == 4096


def test_an_unset_token_budget_batches_at_most_512_padded_tokens_on_cpu() -> None:
    backend = RecordingBackend()
    long_text = " ".join(["a"] * 100)

    async def main() -> None:
        async with running_engine(backend, max_length=128) as engine:
            blocker = await hold_the_worker(engine, backend)
            work = asyncio.create_task(engine.predict(texts(*[long_text] * 12)))
            await queued_inputs(engine, 12)
            backend.release.set()
            await asyncio.gather(blocker, work)

    asyncio.run(main())
    assert [len(batch) for batch in backend.batches[1:]] == [5, 5, 2]  # 5 x 100 <= 512 < 6 x 100


# -- inference streams -----------------------------------------------------------------------


class ConcurrentBackend(RecordingBackend):
    """Holds every batch until released, counting how many run at the same time."""

    def __init__(self) -> None:
        super().__init__()
        self.release.clear()
        self._lock = threading.Lock()
        self.active = 0
        self.most_at_once = 0

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        with self._lock:
            self.active += 1
            self.most_at_once = max(self.most_at_once, self.active)
        try:
            return super().run(feeds)
        finally:
            with self._lock:
                self.active -= 1


async def until_running(backend: ConcurrentBackend, count: int) -> None:
    for _ in range(3000):
        if backend.active >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} batches never ran at once (most: {backend.most_at_once})")


@pytest.mark.parametrize("streams", [1, 2, 3])
def test_up_to_the_stream_count_of_batches_run_at_once(streams: int) -> None:
    backend = ConcurrentBackend()

    async def main() -> list[EngineResult]:
        async with running_engine(
            backend, inference_streams=streams, inference_batch_size=1
        ) as engine:
            requests = []
            for word in ["a", "b b", "c c c", "d d d d"]:
                requests.append(asyncio.create_task(engine.predict(texts(word))))
                await asyncio.sleep(0)
            await until_running(backend, streams)
            await queued_inputs(engine, 4 - streams)  # the rest wait for a free stream
            backend.release.set()
            return list(await asyncio.gather(*requests))

    results = asyncio.run(main())
    assert backend.most_at_once == streams
    assert [r.predictions[0].num_tokens for r in results] == [1, 2, 3, 4]


def test_closing_lets_batches_running_on_other_streams_answer() -> None:
    backend = ConcurrentBackend()

    async def main() -> tuple[EngineResult, EngineResult]:
        async with running_engine(backend, inference_streams=2, inference_batch_size=1) as engine:
            first = asyncio.create_task(engine.predict(texts("a")))
            second = asyncio.create_task(engine.predict(texts("b b")))
            await until_running(backend, 2)
            closing = asyncio.create_task(engine.close())
            await asyncio.sleep(0.05)
            assert not closing.done()  # it waits for both running batches
            backend.release.set()
            await closing
            return await first, await second

    first, second = asyncio.run(main())
    assert [first.predictions[0].num_tokens, second.predictions[0].num_tokens] == [1, 2]


@pytest.mark.parametrize(
    ("streams", "explicit", "cores", "threads"),
    [(1, 0, 2, 2), (2, 0, 2, 1), (2, 0, 16, 8), (4, 0, 2, 1), (2, 3, 16, 3)],
)
def test_streams_share_the_cores_unless_threads_are_set(
    streams: int, explicit: int, cores: int, threads: int
) -> None:
    settings = Settings(inference_streams=streams, intra_op_threads=explicit)
    assert intra_op_threads(settings, cores) == threads


# -- the idle fast path ----------------------------------------------------------------------


def test_an_idle_engine_runs_a_request_at_once_in_request_order() -> None:
    backend = RecordingBackend()

    async def main() -> tuple[EngineResult, int]:
        async with running_engine(backend) as engine:
            result = await engine.predict(texts("c c c", "a", "b b"))
            return result, engine._seq

    result, queued_ever = asyncio.run(main())
    assert queued_ever == 0  # never went through the queue
    assert backend.batches == [[[2], [3, 3], [4, 4, 4]]]  # one batch, shortest first
    assert [p.num_tokens for p in result.predictions] == [3, 1, 2]
    assert (result.times.queue_s, result.times.batch_size) == (0.0, 3)
    assert result.times.inference_s > 0


def test_a_request_over_one_batch_goes_through_the_queue_even_when_idle() -> None:
    backend = RecordingBackend()

    async def main() -> EngineResult:
        async with running_engine(backend, batch_max_tokens=4) as engine:
            return await engine.predict(texts("a a", "b b", "c c"))

    result = asyncio.run(main())
    assert backend.batches == [[[2, 2], [3, 3]], [[4, 4]]]
    assert [p.num_tokens for p in result.predictions] == [2, 2, 2]


def test_probes_never_take_the_fast_path() -> None:
    backend = RecordingBackend()

    async def main() -> int:
        async with running_engine(backend) as engine:
            await engine.predict(texts("a"), Priority.PROBE)
            return engine._seq

    assert asyncio.run(main()) == 1


def test_the_fast_path_keeps_the_deadline_and_frees_its_stream_after_a_stall() -> None:
    backend = RecordingBackend()

    async def main() -> EngineResult:
        async with running_engine(backend, request_timeout_ms=50) as engine:
            backend.release.clear()  # the session hangs
            with pytest.raises(DeadlineExceeded, match="within 50 ms"):
                await engine.predict(texts("a"))
            backend.release.set()
            for _ in range(3000):  # the stalled run ends and gives its stream back
                if not engine._running:
                    break
                await asyncio.sleep(0.01)
            return await engine.predict(texts("b b"))

    assert [p.num_tokens for p in asyncio.run(main()).predictions] == [2]
    assert backend.batches == [[[2]], [[3, 3]]]
