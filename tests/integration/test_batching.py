"""The batcher in the real server: warm-up before ready, stage headers and batch metrics, answers
under concurrency equal to sequential ones, 429 from an overfilled queue and 503 past a deadline."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import copy_bundle
from tests.integration.server import RunningServer, serve

pytestmark = pytest.mark.integration

PREDICT = "/v1/models/demo/predict"
SENTENCES = [
    ("Die Katze schläft im Garten.", "Die Katze schläft im Garten."),
    ("猫は庭で寝ています。", "犬は駅で走っています。"),
    ("Кошка спит в саду.", "Собака спит в саду."),
    ("El perro corre en el parque.", "El gato duerme en la casa."),
    ("The cat sleeps in the garden.", "In the garden the cat sleeps."),
    ("Le chien court dans le parc.", "Le chien court dans le parc."),
]


def pairs(items: list[tuple[str, str]]) -> dict[str, Any]:
    return {"inputs": [{"text": a, "text_pair": b} for a, b in items]}


def long_pair(n: int) -> tuple[str, str]:
    """A pair the demo tokenizer cuts at its 128-token maximum."""
    return (f"Die Katze {n} schläft im Garten. " * 12, "The dog runs in the park. " * 12)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, demo_bundle: Path) -> Path:
    root = tmp_path_factory.mktemp("batching-repo")
    copy_bundle(demo_bundle, root, "demo", "1")
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[RunningServer]:
    with serve(repo, {"POLYPROBE_BATCH_WAIT_MS": "2"}) as running:
        yield running


def samples(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return sum(v for (n, ls), v in found.items() if n == name and set(labels.items()) <= set(ls))


def test_every_length_bucket_ran_before_the_server_took_connections(server: RunningServer) -> None:
    log = server.log_text()
    warmed = re.search(r"warmed up demo at lengths \[([0-9, ]+)\]", log)
    assert warmed is not None, log
    lengths = [int(n) for n in warmed.group(1).split(",")]
    assert lengths == [8, 16, 32, 64, 128]  # the demo's max sequence length is 128
    assert log.index(warmed.group(0)) < log.index("Uvicorn running on")
    with server.client() as client:
        assert client.get("/readyz").status_code == 200
        found = samples(client)
    assert value(found, "polyprobe_warmup_batches_total", model="demo") == len(lengths)


def test_stage_headers_and_batch_metrics_describe_the_request(server: RunningServer) -> None:
    with server.client() as client:
        before = samples(client)
        response = client.post(PREDICT, json=pairs(SENTENCES))
        assert response.status_code == 200, response.text
        after = samples(client)
    for header in ("x-queue-time", "x-tokenize-time", "x-inference-time"):
        assert float(response.headers[header]) >= 0, header
    assert float(response.headers["x-inference-time"]) > 0
    assert response.headers["x-batch-size"] == str(len(SENTENCES))  # alone: one batch
    tokens = [p["num_tokens"] for p in response.json()["predictions"]]

    def delta(name: str, **labels: str) -> float:
        return value(after, name, model="demo", **labels) - value(
            before, name, model="demo", **labels
        )

    padded = len(tokens) * max(tokens)
    assert delta("polyprobe_batch_size_count") == 1
    assert delta("polyprobe_batch_size_sum") == len(SENTENCES)
    assert delta("polyprobe_batch_tokens_sum") == padded
    assert delta("polyprobe_batch_padding_ratio_sum") == pytest.approx(1 - sum(tokens) / padded)
    assert delta("polyprobe_queue_wait_duration_seconds_count", priority="predict") == len(
        SENTENCES
    )
    assert delta("polyprobe_tokenize_duration_seconds_count") == 1
    assert delta("polyprobe_inference_duration_seconds_count") == 1
    # Nothing waits and nothing is in flight once the answer is out.
    assert value(after, "polyprobe_queue_depth", model="demo") == 0
    assert value(after, "polyprobe_queue_tokens", model="demo") == 0
    assert value(after, "polyprobe_in_flight_requests", model="demo") == 0


def test_concurrent_requests_get_the_answers_sequential_ones_get(server: RunningServer) -> None:
    bodies = [pairs([SENTENCES[i % len(SENTENCES)], long_pair(i)][: 1 + i % 2]) for i in range(24)]
    with server.client() as client:
        sequential = [client.post(PREDICT, json=b).json()["predictions"] for b in bodies]

        def send(body: dict[str, Any]) -> httpx.Response:
            return client.post(PREDICT, json=body)

        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(send, bodies))
    for expected, response in zip(sequential, responses, strict=True):
        assert response.status_code == 200, response.text
        got = response.json()["predictions"]
        assert [p["label"] for p in got] == [p["label"] for p in expected]
        assert [p["num_tokens"] for p in got] == [p["num_tokens"] for p in expected]
        for a, b in zip(got, expected, strict=True):
            for label, probability in b["probabilities"].items():
                assert a["probabilities"][label] == pytest.approx(probability, abs=1e-5)


def test_an_overfilled_queue_answers_429_with_retry_after(repo: Path) -> None:
    # One input per batch and a one-token queue: while the big request's inputs wait, any other
    # prediction overfills the queue.
    env = {
        "POLYPROBE_MAX_QUEUE_TOKENS": "1",
        "POLYPROBE_INFERENCE_BATCH_SIZE": "1",
        "POLYPROBE_BATCH_WAIT_MS": "0",
    }
    big = pairs([long_pair(i) for i in range(64)])
    with serve(repo, env) as running, running.client() as client:
        results: list[httpx.Response] = []
        sender = threading.Thread(target=lambda: results.append(client.post(PREDICT, json=big)))
        sender.start()
        # Only once the big request's inputs wait (it could itself be refused behind a small one).
        while sender.is_alive() and not value(
            samples(client), "polyprobe_queue_depth", model="demo"
        ):
            pass
        refused = None
        while sender.is_alive() and refused is None:
            response = client.post(PREDICT, json=pairs(SENTENCES[:1]))
            if response.status_code == 429:
                refused = response
        sender.join()
        assert refused is not None, "the big request finished before any other was refused"
        assert int(refused.headers["retry-after"]) >= 1
        error = refused.json()["error"]
        assert error["type"] == "overloaded"
        assert "POLYPROBE_MAX_QUEUE_TOKENS=1" in error["message"]
        assert results[0].status_code == 200
        assert len(results[0].json()["predictions"]) == 64
        # With the queue empty again, a request larger than the bound is still served alone.
        assert client.post(PREDICT, json=pairs(SENTENCES)).status_code == 200
        assert value(samples(client), "polyprobe_errors_total", type="overloaded") >= 1


def test_a_request_past_its_deadline_gets_503_not_a_late_answer(repo: Path) -> None:
    # Tokenizing 64 long pairs alone takes longer than the 1 ms deadline.
    with serve(repo, {"POLYPROBE_REQUEST_TIMEOUT_MS": "1"}) as running, running.client() as client:
        response = client.post(PREDICT, json=pairs([long_pair(i) for i in range(64)]))
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["type"] == "deadline_exceeded"
        assert "POLYPROBE_REQUEST_TIMEOUT_MS" in error["message"]
        assert int(response.headers["retry-after"]) >= 1
        assert value(samples(client), "polyprobe_in_flight_requests", model="demo") == 0
