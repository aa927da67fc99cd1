"""Open-loop (Poisson arrivals) and closed-loop (N clients) HTTP load against a predict endpoint."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from loadtest.payloads import Body, PayloadFactory

LOOPBACK_HOSTS = frozenset({"localhost", "::1", "[::1]"})
# Past this many requests in flight the client, not the server, would become the bottleneck and
# the offered load would silently stop being what was asked for: further arrivals are counted as
# client-side drops (reported as errors) instead of being sent.
DEFAULT_MAX_OUTSTANDING = 1024
OUTSTANDING_LIMIT = "client_outstanding_limit"

# Turns the native predict body into what another server expects (used by bench/ for peers).
BodyEncoder = Callable[[Body], Any]


@dataclass(frozen=True)
class LoadShape:
    mode: Literal["open", "closed"]
    duration_s: float
    rate: float = 0.0
    concurrency: int = 0
    max_requests: int | None = None
    timeout_s: float = 30.0
    max_outstanding: int = DEFAULT_MAX_OUTSTANDING

    def __post_init__(self) -> None:
        if self.mode == "open" and self.rate <= 0:
            raise ValueError("open-loop load needs a rate > 0 (requests per second)")
        if self.mode == "closed" and self.concurrency < 1:
            raise ValueError("closed-loop load needs concurrency >= 1")
        if self.max_requests is not None and self.max_requests < 1:
            raise ValueError("the request bound must be >= 1")
        if self.duration_s < 0:
            raise ValueError("the duration must be >= 0 seconds (0: bounded by requests only)")
        if self.duration_s == 0 and self.max_requests is None:
            raise ValueError("bound the run by a duration or a request count")
        if self.timeout_s <= 0 or self.max_outstanding < 1:
            raise ValueError("the timeout must be > 0 and max outstanding >= 1")

    @property
    def offered_load(self) -> float:
        """Requests per second for open loop, clients for closed loop: the x axis of a sweep."""
        return self.rate if self.mode == "open" else float(self.concurrency)

    def describe(self) -> str:
        if self.mode == "open":
            return f"{self.rate:g} req/s open-loop"
        return f"{self.concurrency} clients"


@dataclass(frozen=True)
class RequestRecord:
    start_s: float  # for open loop, the scheduled arrival, so a late send still counts as waiting
    latency_s: float
    status: int  # 0: no HTTP response (see error)
    inputs: int
    error: str | None = None


@dataclass(frozen=True)
class RunResult:
    records: list[RequestRecord]
    elapsed_s: float  # from the first scheduled arrival until the last answer


def require_loopback(url: str, allow_remote: bool) -> None:
    """Refuse anything but this machine unless asked: a load test must not hit others by mistake."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL such as http://127.0.0.1:8000")
    host = parts.hostname
    if allow_remote or host in LOOPBACK_HOSTS or _is_ipv4_loopback(host):
        return
    raise ValueError(f"{url} is not a loopback address; pass --allow-remote to load it anyway")


def _is_ipv4_loopback(host: str) -> bool:
    octets = host.split(".")
    return len(octets) == 4 and octets[0] == "127" and all(o.isdigit() for o in octets)


def poisson_arrivals(
    rate: float, duration_s: float, max_requests: int | None, rng: random.Random
) -> list[float]:
    """Arrival times (s from the start) of a Poisson process, cut at the duration and the count."""
    arrivals: list[float] = []
    at = 0.0
    while max_requests is None or len(arrivals) < max_requests:
        at += rng.expovariate(rate)
        if duration_s > 0 and at > duration_s:
            break
        arrivals.append(at)
    return arrivals


async def _send(
    client: httpx.AsyncClient, path: str, body: Body, encode: BodyEncoder | None
) -> tuple[int, str | None]:
    try:
        response = await client.post(path, json=body if encode is None else encode(body))
        await response.aread()
    except httpx.HTTPError as exc:
        return 0, type(exc).__name__
    return response.status_code, None


async def run_load(
    base_url: str,
    path: str,
    shape: LoadShape,
    payloads: PayloadFactory,
    seed: int = 0,
    encode: BodyEncoder | None = None,
) -> RunResult:
    """POST payloads to base_url + path in the given shape; every request is accounted for."""
    connections = shape.max_outstanding if shape.mode == "open" else shape.concurrency
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(
        base_url=base_url, timeout=shape.timeout_s, limits=limits
    ) as client:
        if shape.mode == "open":
            arrivals = poisson_arrivals(
                shape.rate, shape.duration_s, shape.max_requests, random.Random(seed)
            )
            return await _open_loop(client, path, arrivals, shape, payloads, encode)
        return await _closed_loop(client, path, shape, payloads, encode)


async def _open_loop(
    client: httpx.AsyncClient,
    path: str,
    arrivals: list[float],
    shape: LoadShape,
    payloads: PayloadFactory,
    encode: BodyEncoder | None,
) -> RunResult:
    """Arrivals follow the schedule whatever the responses do: latency cannot hide load.

    Latency is counted from the scheduled arrival, not from the moment the client got round to
    sending, so a client that falls behind shows up as latency instead of vanishing
    (coordinated omission).
    """
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    outstanding = 0
    records: list[RequestRecord] = []

    async def one(scheduled: float, body: Body) -> None:
        nonlocal outstanding
        status, error = await _send(client, path, body, encode)
        outstanding -= 1
        records.append(
            RequestRecord(
                scheduled, loop.time() - t0 - scheduled, status, len(body["inputs"]), error
            )
        )

    tasks: list[asyncio.Task[None]] = []
    for scheduled in arrivals:
        body = payloads.next_body()  # drawn even when dropped, so the n-th body stays the n-th
        delay = scheduled - (loop.time() - t0)
        if delay > 0:
            await asyncio.sleep(delay)
        if outstanding >= shape.max_outstanding:
            records.append(RequestRecord(scheduled, 0.0, 0, len(body["inputs"]), OUTSTANDING_LIMIT))
            continue
        outstanding += 1
        tasks.append(asyncio.create_task(one(scheduled, body)))
    await asyncio.gather(*tasks)
    return RunResult(sorted(records, key=lambda r: r.start_s), loop.time() - t0)


async def _closed_loop(
    client: httpx.AsyncClient,
    path: str,
    shape: LoadShape,
    payloads: PayloadFactory,
    encode: BodyEncoder | None,
) -> RunResult:
    """N clients, each sending its next request as soon as the previous one is answered."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    records: list[RequestRecord] = []
    issued = 0

    def claim_next() -> bool:
        nonlocal issued
        if shape.max_requests is not None and issued >= shape.max_requests:
            return False
        if shape.duration_s > 0 and loop.time() - t0 >= shape.duration_s:
            return False
        issued += 1
        return True

    async def client_loop() -> None:
        while claim_next():
            body = payloads.next_body()
            started = loop.time() - t0
            status, error = await _send(client, path, body, encode)
            records.append(
                RequestRecord(
                    started, loop.time() - t0 - started, status, len(body["inputs"]), error
                )
            )

    await asyncio.gather(*(client_loop() for _ in range(shape.concurrency)))
    return RunResult(sorted(records, key=lambda r: r.start_s), loop.time() - t0)
