"""Micro benchmark of the serving engine: server overhead beyond model time, and throughput with
and without dynamic batching, on real PAWS-X pairs through the real server over loopback.

    python bench/batching.py --model-repo .cache/bench-models   # empty: gets the shipped models
    python bench/batching.py --model-repo /path/repo --model demo --long  # 128-token inputs

Overhead: one client, one input per request, one request at a time; per request, the client's
latency minus the model time the server reports (x-inference-time). It is measured twice: with
httpx, as an application would call, and with a lean keep-alive socket client whose own work is
next to nothing, so that what remains is the server's (and the loopback's). Throughput: N concurrent
clients (one asyncio process), one input per request, for a fixed request count, against a
second server: by default the same one with POLYPROBE_INFERENCE_BATCH_SIZE=1 (each input runs
alone), or whatever --baseline-setting says.
The client shares the machine with the server, so every number includes its CPU use.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.server import serve  # noqa: E402  (the tests' loopback server runner)

JSON = {"content-type": "application/json"}
LANGS = ("de", "en", "es", "fr", "ja", "ko", "zh")


def pawsx_pairs(data: Path, long: bool) -> list[tuple[str, str]]:
    """PAWS-X dev pairs of every language, interleaved; `long` joins 8 pairs into one input, which
    the tokenizer cuts at the model's maximum (128 tokens for the demo and e5-small-shaped)."""
    rows = []
    for lang in LANGS:
        with (data / "pawsx" / "dev" / f"{lang}.jsonl").open(encoding="utf-8") as lines:
            rows.append([json.loads(line) for line in lines])
    pairs = [(r["sentence1"], r["sentence2"]) for group in zip(*rows, strict=True) for r in group]
    if not long:
        return pairs
    return [
        (" ".join(a for a, _ in pairs[i : i + 8]), " ".join(b for _, b in pairs[i : i + 8]))
        for i in range(0, len(pairs) - 8, 8)
    ]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Overhead:
    client: str
    requests: int
    client_p50_ms: float
    model_p50_ms: float
    overhead_p50_ms: float  # client latency minus x-inference-time, per request
    tokenize_p50_ms: float
    queue_p50_ms: float


@dataclass
class Throughput:
    label: str
    concurrency: int
    requests: int
    errors: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    mean_batch_size: float


def body(pair: tuple[str, str]) -> dict[str, Any]:
    return {"inputs": [{"text": pair[0], "text_pair": pair[1]}]}


class LeanClient:
    """One keep-alive HTTP/1.1 connection that sends prepared bytes and reads the status line,
    the headers and a Content-Length body: next to no client work, so the latency it sees is
    the server's and the loopback's. Enough for polyprobe's JSON answers; nothing more."""

    def __init__(self, base_url: str) -> None:
        host, port = base_url.removeprefix("http://").split(":")
        self._socket = socket.create_connection((host, int(port)))
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader = self._socket.makefile("rb")

    def post(self, path: str, payload: bytes) -> tuple[int, dict[str, str]]:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        )
        self._socket.sendall(head.encode("ascii") + payload)
        status = int(self._reader.readline().split()[1])
        headers = {}
        while (line := self._reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.lower()] = value.strip()
        self._reader.read(int(headers["content-length"]))
        return status, headers

    def close(self) -> None:
        self._reader.close()
        self._socket.close()


def measure_overhead(
    base_url: str, path: str, pairs: list[tuple[str, str]], n: int, client_kind: str
) -> Overhead:
    """`client_kind`: "httpx" (what an application would use) or "lean" (LeanClient)."""
    client_ms, model_ms, overhead_ms, tokenize_ms, queue_ms = [], [], [], [], []
    payloads = [json.dumps(body(pair)).encode() for pair in pairs]
    if client_kind == "lean":
        lean = LeanClient(base_url)
        post, finish = lambda payload: lean.post(path, payload), lean.close
    else:
        client = httpx.Client(base_url=base_url, timeout=60)

        def post(payload: bytes) -> tuple[int, dict[str, str]]:
            response = client.post(path, content=payload, headers=JSON)
            return response.status_code, dict(response.headers)

        finish = client.close
    try:
        for i in range(n + 20):
            began = time.perf_counter()
            status, headers = post(payloads[i % len(payloads)])
            elapsed = (time.perf_counter() - began) * 1000
            if status != 200:
                raise RuntimeError(f"request {i} answered {status}")
            if i < 20:  # the first few requests open the connection and fill caches
                continue
            inference = float(headers["x-inference-time"])
            client_ms.append(elapsed)
            model_ms.append(inference)
            overhead_ms.append(elapsed - inference)
            tokenize_ms.append(float(headers["x-tokenize-time"]))
            queue_ms.append(float(headers["x-queue-time"]))
    finally:
        finish()
    return Overhead(
        client_kind,
        n,
        *(round(statistics.median(v), 3) for v in (client_ms, model_ms, overhead_ms)),
        round(statistics.median(tokenize_ms), 3),
        round(statistics.median(queue_ms), 3),
    )


async def closed_loop(
    base_url: str, path: str, pairs: list[tuple[str, str]], n: int, concurrency: int
) -> tuple[float, list[float], int, list[int]]:
    latencies: list[float] = []
    sizes: list[int] = []
    errors = 0
    counter = iter(range(n))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as client:

        async def worker() -> None:
            nonlocal errors
            for i in counter:
                began = time.perf_counter()
                try:
                    response = await client.post(path, json=body(pairs[i % len(pairs)]))
                except httpx.TransportError as exc:
                    errors += 1
                    print(f"request {i}: {exc!r}", file=sys.stderr)
                    continue
                if response.status_code != 200:
                    errors += 1
                    continue
                latencies.append((time.perf_counter() - began) * 1000)
                sizes.append(int(response.headers["x-batch-size"]))

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - began
    return wall, latencies, errors, sizes


def measure_throughput(
    label: str, base_url: str, path: str, pairs: list[tuple[str, str]], n: int, concurrency: int
) -> Throughput:
    asyncio.run(closed_loop(base_url, path, pairs, 4 * concurrency, concurrency))  # warm
    wall, latencies, errors, sizes = asyncio.run(closed_loop(base_url, path, pairs, n, concurrency))
    return Throughput(
        label,
        concurrency,
        n,
        errors,
        round(len(latencies) / wall, 1),
        round(percentile(latencies, 0.5), 2),
        round(percentile(latencies, 0.99), 2),
        round(statistics.fmean(sizes), 2) if sizes else 0.0,
    )


def servers(
    batching_env: dict[str, str], baseline_env: dict[str, str]
) -> Iterator[tuple[str, dict[str, str]]]:
    def described(env: dict[str, str]) -> str:
        return " ".join(f"{key}={value}" for key, value in env.items()) or "defaults"

    yield f"batching ({described(batching_env)})", batching_env
    yield f"baseline ({described(baseline_env)})", baseline_env


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model-repo", type=Path, default=ROOT / ".cache" / "bench-models")
    parser.add_argument("--model", default="pawsx-stilts")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument(
        "--long", action="store_true", help="128-token inputs instead of PAWS-X pairs"
    )
    parser.add_argument("--overhead-requests", type=int, default=300)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--out", type=Path, help="write the results as JSON here too")
    parser.add_argument(
        "--batching-setting",
        action="append",
        default=[],
        metavar="POLYPROBE_KEY=VALUE",
        help="a setting for the batching server (the runner passes no POLYPROBE_ variable through)",
    )
    parser.add_argument(
        "--baseline-setting",
        action="append",
        default=[],
        metavar="POLYPROBE_KEY=VALUE",
        help="a setting for the second server (default: POLYPROBE_INFERENCE_BATCH_SIZE=1, "
        "no batching)",
    )
    args = parser.parse_args()
    given = args.batching_setting + args.baseline_setting
    if malformed := [s for s in given if "=" not in s]:
        parser.error(f"settings take POLYPROBE_KEY=VALUE, got {malformed}")
    batching_env = dict(setting.split("=", 1) for setting in args.batching_setting)
    baseline_env = dict(setting.split("=", 1) for setting in args.baseline_setting) or {
        "POLYPROBE_INFERENCE_BATCH_SIZE": "1"
    }
    args.model_repo.mkdir(parents=True, exist_ok=True)
    pairs = pawsx_pairs(args.data, args.long)
    path = f"/v1/models/{args.model}/predict"
    results: dict[str, Any] = {
        "model": args.model,
        "inputs": "128-token" if args.long else "PAWS-X pairs",
        "cores": len(os.sched_getaffinity(0)),
        "load_average_before": os.getloadavg()[0],
        "throughput": [],
    }
    for index, (label, env) in enumerate(servers(batching_env, baseline_env)):
        with serve(args.model_repo, env, startup_timeout=900) as server:
            if index == 0:  # the overhead is the batching server's
                results["overhead"] = [
                    asdict(
                        measure_overhead(
                            server.base_url, path, pairs, args.overhead_requests, client_kind
                        )
                    )
                    for client_kind in ("httpx", "lean")
                ]
            results["throughput"].append(
                asdict(
                    measure_throughput(
                        label, server.base_url, path, pairs, args.requests, args.concurrency
                    )
                )
            )
    results["load_average_after"] = os.getloadavg()[0]
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
