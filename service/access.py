"""Who may call the service and how much: bearer API keys, per-key rate limits, a request body cap.

One ASGI middleware in front of the routes, so every route (v1, v2, probe) gets the same rules.
Health, readiness and metrics stay open: orchestrators and Prometheus call them without keys.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import ServiceMetrics

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"})


def read_api_keys(inline: str | None, key_file: Path | None) -> tuple[str, ...]:
    """Keys from a comma-separated setting and/or a file of one key per line (# comments allowed)."""
    keys: list[str] = []
    if inline:
        keys.extend(part.strip() for part in inline.split(","))
    if key_file is not None:
        for line in key_file.read_text("utf-8").splitlines():
            keys.append(line.split("#", 1)[0].strip())
    found = tuple(key for key in keys if key)
    if any(len(key) < 16 for key in found):
        raise ValueError(
            "API keys must be at least 16 characters (use e.g. `openssl rand -hex 24`)"
        )
    return found


def key_id(key: str) -> str:
    """A short, non-secret name for a key: rate-limit buckets and logs never hold the key itself."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]


def match_key(presented: str, keys: Iterable[str]) -> str | None:
    """The id of the key presented, comparing against every key in constant time per key."""
    matched: str | None = None
    candidate = presented.encode("utf-8")
    for key in keys:
        # No early exit: the time taken does not tell which key (or how much of one) matched.
        if hmac.compare_digest(candidate, key.encode("utf-8")):
            matched = key_id(key)
    return matched


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


@dataclass(slots=True)
class TokenBucket:
    """`rate` requests per second on average, up to `burst` at once."""

    rate: float
    burst: int
    tokens: float = field(init=False)
    updated: float = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = float(self.burst)
        self.updated = -math.inf

    def take(self, now: float) -> float:
        """0.0 when the request may go ahead, else the seconds until one token is back."""
        if self.updated == -math.inf:
            self.updated = now
        self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate

    def is_full(self, now: float) -> bool:
        """Refilled to the burst by `now`: from then on it behaves exactly as a new bucket."""
        return self.tokens + (now - self.updated) * self.rate >= self.burst


@dataclass(frozen=True)
class RateLimit:
    per_second: float
    burst: int


# About 300 bytes a bucket: the cap holds the limiter near 30 MB whatever clients do.
MAX_BUCKETS = 100_000
SWEEP_AFTER = 1024


class RateLimiter:
    """Buckets per (client, traffic class); a limit of 0 requests/s means unlimited.

    A client address or key costs memory only while its bucket is partly drained: a refilled
    bucket is dropped, since a new one is indistinguishable from it. The sweep that drops them
    runs after as many new buckets as the last sweep left (at least `sweep_after`), so its cost
    is amortised over those creations: clients rotating addresses cannot make it run on every
    request. `max_buckets` bounds what the sweep cannot free (clients that keep their buckets
    drained): past it the least recently used bucket is forgotten, and that one client gets a
    fresh burst early, rather than new clients being refused.
    """

    def __init__(
        self,
        limits: dict[str, RateLimit],
        clock: Callable[[], float],
        *,
        max_buckets: int = MAX_BUCKETS,
        sweep_after: int = SWEEP_AFTER,
    ) -> None:
        if max_buckets < 1 or sweep_after < 1:
            raise ValueError("max_buckets and sweep_after must be at least 1")
        self.limits = limits
        self.clock = clock
        self.max_buckets = max_buckets
        self.sweep_after = sweep_after
        # Least recently used first: every take moves its bucket to the end.
        self.buckets: dict[tuple[str, str], TokenBucket] = {}
        self._until_sweep = sweep_after

    def retry_after(self, client: str, traffic: str) -> float:
        limit = self.limits[traffic]
        if limit.per_second <= 0:
            return 0.0
        now = self.clock()
        key = (client, traffic)
        bucket = self.buckets.pop(key, None)
        if bucket is None:
            bucket = self._new_bucket(limit, now)
        self.buckets[key] = bucket
        return bucket.take(now)

    def _new_bucket(self, limit: RateLimit, now: float) -> TokenBucket:
        self._until_sweep -= 1
        if self._until_sweep <= 0:
            self.buckets = {k: b for k, b in self.buckets.items() if not b.is_full(now)}
            self._until_sweep = max(self.sweep_after, len(self.buckets))
        if len(self.buckets) >= self.max_buckets:
            del self.buckets[next(iter(self.buckets))]
        return TokenBucket(limit.per_second, limit.burst)


def traffic_class(path: str) -> str:
    """Which limit a request counts against, from the shape of the probe routes
    (service/probe_routes.py): `/v1/models/{model}/probe` and everything under `/v1/probe/`.

    Whole path segments are compared, so a model named `probe` or `probe-x` is prediction traffic
    on its predict and infer routes.
    """
    parts = path.split("/")
    if parts[1:3] == ["v1", "probe"]:
        return "probe"
    if len(parts) == 5 and parts[1:3] == ["v1", "models"] and parts[4] == "probe":
        return "probe"
    return "predict"


@dataclass(frozen=True)
class AccessPolicy:
    api_keys: tuple[str, ...]
    limits: dict[str, RateLimit]
    max_body_bytes: int


class Rejected(Exception):
    def __init__(
        self, status: int, error_type: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.headers = headers or {}


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class AccessMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        policy: AccessPolicy,
        metrics: ServiceMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.policy = policy
        self.metrics = metrics
        self.limiter = RateLimiter(policy.limits, clock)

    def _client(self, scope: Scope) -> str:
        token = bearer_token(_header(scope, b"authorization"))
        if self.policy.api_keys:
            matched = match_key(token, self.policy.api_keys) if token else None
            if matched is None:
                problem = "is not a valid API key" if token else "is missing"
                raise Rejected(
                    401,
                    "unauthorized",
                    f"the bearer token {problem}: send `Authorization: Bearer <key>`",
                    {"www-authenticate": "Bearer"},
                )
            return f"key:{matched}"
        address = scope.get("client")
        return f"address:{address[0] if address else 'unknown'}"

    def _check_declared_size(self, scope: Scope) -> None:
        declared = _header(scope, b"content-length")
        if (
            declared is not None
            and declared.isdigit()
            and int(declared) > self.policy.max_body_bytes
        ):
            raise self._too_large()

    def _too_large(self) -> Rejected:
        return Rejected(
            413,
            "payload_too_large",
            f"request body over {self.policy.max_body_bytes} bytes (POLYPROBE_MAX_BODY_BYTES): "
            "send fewer or shorter inputs, or a probe job",
        )

    async def _buffered_body(self, receive: Receive) -> list[Message]:
        """Read a body of undeclared length up to the cap, so an oversized one is refused whole."""
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages
            size += len(message.get("body", b""))
            if size > self.policy.max_body_bytes:
                raise self._too_large()
            if not message.get("more_body", False):
                return messages

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        try:
            client = self._client(scope)
            traffic = traffic_class(scope["path"])
            wait = self.limiter.retry_after(client, traffic)
            if wait > 0:
                raise Rejected(
                    429,
                    "rate_limited",
                    f"rate limit for {traffic} traffic reached: retry in {wait:.2f} s",
                    {"retry-after": str(max(1, math.ceil(wait)))},
                )
            self._check_declared_size(scope)
            if _header(scope, b"content-length") is None and scope["method"] in {"POST", "PUT"}:
                replay = await self._buffered_body(receive)

                async def replayed() -> Message:
                    return replay.pop(0) if replay else await receive()

                await self.app(scope, replayed, send)
                return
        except Rejected as rejection:
            await self._reject(scope, send, rejection)
            return
        await self.app(scope, receive, send)

    async def _reject(self, scope: Scope, send: Send, rejection: Rejected) -> None:
        self.metrics.errors.labels(rejection.error_type).inc()
        # The v2 protocol's error body is a bare string; v1's names the type too.
        error: object = (
            rejection.message
            if scope["path"].startswith("/v2/")
            else {"type": rejection.error_type, "message": rejection.message}
        )
        body = json.dumps({"error": error}).encode("utf-8")
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        headers += [(k.encode(), v.encode()) for k, v in rejection.headers.items()]
        await send({"type": "http.response.start", "status": rejection.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
