"""Open-loop (Poisson arrivals) and closed-loop (N clients) HTTP load against a predict endpoint."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import httpx

from loadtest.payloads import PayloadFactory

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
# Beyond this many requests in flight the client, not the server, would become the bottleneck
# and the offered load would silently stop being what was asked for.
MAX_OUTSTANDING = 4096


@dataclass(frozen=True)
class LoadShape:
    mode: Literal["open", "closed"]
    duration_s: float
    rate: float = 0.0
    concurrency: int = 0
    max_requests: int | None = None
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.mode == "open" and self.rate <= 0:
            raise ValueError("open-loop load needs a rate > 0 (requests per second)")
        if self.mode == "closed" and self.concurrency < 1:
            raise ValueError("closed-loop load needs concurrency >= 1")
        if self.duration_s <= 0 and not self.max_requests:
            raise ValueError("bound the run by a duration or a request count")

    def describe(self) -> str:
        offered = (
            f"{self.rate:g} req/s open-loop"
            if self.mode == "open"
            else f"{self.concurrency} clients"
        )
        return offered


@dataclass(frozen=True)
class RequestRecord:
    start_s: float
    latency_s: float
    status: int
    inputs: int
    error: str | None = None


def require_loopback(url: str, allow_remote: bool) -> None:
    host = urlsplit(url).hostname or ""
    if host not in LOOPBACK_HOSTS and not allow_remote:
        raise ValueError(f"{url} is not a loopback address; pass --allow-remote to load it anyway")


async def _one(
    client: httpx.AsyncClient, path: str, body: dict[str, list[dict[str, str]]], t0: float
) -> RequestRecord:
    start = time.perf_counter()
    try:
        response = await client.post(path, json=body)
        await response.aread()
        status, error = response.status_code, None
    except httpx.HTTPError as exc:
        status, error = 0, type(exc).__name__
    end = time.perf_counter()
    return RequestRecord(start - t0, end - start, status, len(body["inputs"]), error)


async def run_load(
    base_url: str, model: str, shape: LoadShape, payloads: PayloadFactory, seed: int = 0
) -> list[RequestRecord]:
    path = f"/v1/models/{model}/predict"
    limits = httpx.Limits(
        max_connections=MAX_OUTSTANDING, max_keepalive_connections=MAX_OUTSTANDING
    )
    async with httpx.AsyncClient(
        base_url=base_url, timeout=shape.timeout_s, limits=limits
    ) as client:
        if shape.mode == "open":
            return await _open_loop(client, path, shape, payloads, random.Random(seed))
        return await _closed_loop(client, path, shape, payloads)


async def _open_loop(
    client: httpx.AsyncClient,
    path: str,
    shape: LoadShape,
    payloads: PayloadFactory,
    rng: random.Random,
) -> list[RequestRecord]:
    """Arrivals follow a Poisson process whatever the responses do: latency cannot hide load."""
    t0 = time.perf_counter()
    tasks: list[asyncio.Task[RequestRecord]] = []
    next_arrival = 0.0
    while True:
        next_arrival += rng.expovariate(shape.rate)
        if shape.duration_s > 0 and next_arrival > shape.duration_s:
            break
        if shape.max_requests is not None and len(tasks) >= shape.max_requests:
            break
        delay = next_arrival - (time.perf_counter() - t0)
        if delay > 0:
            await asyncio.sleep(delay)
        if sum(not t.done() for t in tasks[-MAX_OUTSTANDING:]) >= MAX_OUTSTANDING:
            raise RuntimeError(
                f"{MAX_OUTSTANDING} requests outstanding: the server cannot keep up with "
                f"{shape.rate:g} req/s; lower the rate"
            )
        tasks.append(asyncio.create_task(_one(client, path, payloads.next_body(), t0)))
    return list(await asyncio.gather(*tasks))


async def _closed_loop(
    client: httpx.AsyncClient, path: str, shape: LoadShape, payloads: PayloadFactory
) -> list[RequestRecord]:
    """N clients, each sending its next request as soon as the previous one is answered."""
    t0 = time.perf_counter()
    records: list[RequestRecord] = []
    issued = 0

    def claim_next() -> bool:
        nonlocal issued
        if shape.max_requests is not None and issued >= shape.max_requests:
            return False
        if shape.duration_s > 0 and time.perf_counter() - t0 >= shape.duration_s:
            return False
        issued += 1
        return True

    async def client_loop() -> None:
        while claim_next():
            records.append(await _one(client, path, payloads.next_body(), t0))

    await asyncio.gather(*(client_loop() for _ in range(shape.concurrency)))
    return records
