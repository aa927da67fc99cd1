from __future__ import annotations

import random
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.routing import APIRoute

from service.access import (
    RateLimit,
    RateLimiter,
    TokenBucket,
    bearer_token,
    key_id,
    match_key,
    read_api_keys,
    traffic_class,
)
from service.admin_routes import admin_router
from service.probe_routes import probe_router
from service.routes import router
from service.v2_routes import v2_router

KEY_A = "a" * 16 + "-first-key"
KEY_B = "b" * 16 + "-second-key"


def test_keys_come_from_the_setting_and_the_file(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text(f"# team keys\n{KEY_B}  # ci\n\n", encoding="utf-8")
    assert read_api_keys(f" {KEY_A} ,", key_file) == (KEY_A, KEY_B)
    assert read_api_keys(None, None) == ()


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 characters"):
        read_api_keys("short", None)


def test_match_key_names_the_key_without_revealing_it() -> None:
    assert match_key(KEY_B, (KEY_A, KEY_B)) == key_id(KEY_B)
    assert match_key(KEY_A[:-1], (KEY_A, KEY_B)) is None
    assert KEY_A not in key_id(KEY_A) and len(key_id(KEY_A)) == 12


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (None, None),
        ("", None),
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Basic abc", None),
        ("Bearer ", None),
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3)
    assert [bucket.take(10.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(10.0) == pytest.approx(0.5)
    assert bucket.take(10.25) == pytest.approx(0.25)
    assert bucket.take(10.5) == 0.0
    # Idle time refills up to the burst, never beyond it.
    assert [bucket.take(100.0) for _ in range(4)][-1] == pytest.approx(0.5)


def test_limiter_keeps_clients_and_traffic_classes_apart() -> None:
    now = [0.0]
    limiter = RateLimiter(
        {"predict": RateLimit(1.0, 1), "probe": RateLimit(0.0, 1)}, clock=lambda: now[0]
    )
    assert limiter.retry_after("key:a", "predict") == 0.0
    assert limiter.retry_after("key:a", "predict") == pytest.approx(1.0)
    assert limiter.retry_after("key:b", "predict") == 0.0
    # A limit of 0 per second is no limit.
    assert all(limiter.retry_after("key:a", "probe") == 0.0 for _ in range(10))
    now[0] = 1.0
    assert limiter.retry_after("key:a", "predict") == 0.0


@pytest.mark.parametrize("model", ["demo", "probe", "probe-x", "x-probe"])
def test_traffic_class_follows_the_route_not_the_model_name(model: str) -> None:
    assert traffic_class(f"/v1/models/{model}/predict") == "predict"
    assert traffic_class(f"/v2/models/{model}/infer") == "predict"
    assert traffic_class(f"/v2/models/{model}/versions/1/infer") == "predict"
    assert traffic_class(f"/v1/models/{model}") == "predict"
    assert traffic_class(f"/admin/models/{model}/reload") == "predict"
    assert traffic_class(f"/v1/models/{model}/probe") == "probe"
    assert traffic_class("/v1/probe/compare") == "probe"
    assert traffic_class("/v1/probe/jobs") == "probe"
    assert traffic_class("/v1/probe/jobs/abc/events") == "probe"


@pytest.mark.parametrize("value", ["probe", "probe-x"])
def test_every_route_of_the_app_is_classed_by_its_router(value: str) -> None:
    """A probe route added later, or a route whose parameters happen to read `probe`, is caught."""
    classes = {"predict": [router, v2_router, admin_router], "probe": [probe_router]}
    for expected, routers in classes.items():
        for each in routers:
            for route in each.routes:
                assert isinstance(route, APIRoute)
                path = re.sub(r"\{[^}]+\}", value, route.path)
                assert traffic_class(path) == expected, route.path


def _limiter(
    clock: Callable[[], float], per_second: float, burst: int, **options: int
) -> RateLimiter:
    return RateLimiter({"predict": RateLimit(per_second, burst)}, clock=clock, **options)


def _clients(limiter: RateLimiter) -> list[str]:
    return [client for client, _ in limiter.buckets]


def test_the_sweep_drops_refilled_buckets_and_keeps_drained_ones() -> None:
    now = [0.0]
    limiter = _limiter(lambda: now[0], per_second=1.0, burst=2, sweep_after=4)
    assert limiter.retry_after("idle", "predict") == 0.0  # 1 token left: full again at t=1
    assert [limiter.retry_after("busy", "predict") for _ in range(2)] == [0.0, 0.0]  # full at t=2
    now[0] = 1.5
    assert limiter.retry_after("new-1", "predict") == 0.0  # the 3rd bucket made: no sweep yet
    assert _clients(limiter) == ["idle", "busy", "new-1"]
    assert limiter.retry_after("new-2", "predict") == 0.0  # the 4th: sweeps before adding it
    assert _clients(limiter) == ["busy", "new-1", "new-2"]
    # The kept bucket still holds its 1.5 tokens; the dropped one comes back full, as it was.
    assert limiter.retry_after("busy", "predict") == 0.0
    assert limiter.retry_after("busy", "predict") == pytest.approx(0.5)
    assert [limiter.retry_after("idle", "predict") for _ in range(3)] == [0.0, 0.0, 1.0]


def test_sweeping_never_changes_an_answer() -> None:
    """The same traffic through a limiter that sweeps often and one that never does."""
    rng = random.Random(7)
    now = [0.0]
    sweeping = _limiter(lambda: now[0], per_second=2.0, burst=3, sweep_after=1)
    keeping = _limiter(lambda: now[0], per_second=2.0, burst=3, sweep_after=10**9)
    smallest = len(keeping.buckets)
    for _ in range(5000):
        now[0] += rng.choice([0.0, 0.0, 0.01, 0.1, 0.5, 2.0])
        client = f"address:10.0.0.{rng.randrange(40)}"
        assert sweeping.retry_after(client, "predict") == keeping.retry_after(client, "predict")
        smallest = min(smallest, len(sweeping.buckets) - len(keeping.buckets))
    assert smallest < -10  # the sweep did drop buckets along the way


def test_clients_rotating_addresses_cannot_grow_the_buckets() -> None:
    now = [0.0]
    limiter = _limiter(lambda: now[0], per_second=10.0, burst=5, sweep_after=100)
    largest = 0
    for i in range(20_000):
        now[0] += 0.001  # each bucket refills 100 requests later
        assert limiter.retry_after(f"address:{i}", "predict") == 0.0
        largest = max(largest, len(limiter.buckets))
    assert largest <= 2 * 100


def test_the_cap_forgets_the_least_recently_used_bucket() -> None:
    limiter = _limiter(lambda: 0.0, per_second=1.0, burst=1, max_buckets=2)
    assert limiter.retry_after("a", "predict") == 0.0
    assert limiter.retry_after("b", "predict") == 0.0
    assert limiter.retry_after("a", "predict") == 1.0  # a is now the most recently used
    assert limiter.retry_after("c", "predict") == 0.0
    assert _clients(limiter) == ["a", "c"]
    assert limiter.retry_after("a", "predict") == 1.0  # still limited: its bucket was kept


def test_at_the_cap_the_sweep_stays_amortised(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clients that keep their buckets drained leave the sweep nothing to free; it must still
    not run on every new client."""
    checks = [0]
    is_full = TokenBucket.is_full

    def counted(self: TokenBucket, now: float) -> bool:
        checks[0] += 1
        return is_full(self, now)

    monkeypatch.setattr(TokenBucket, "is_full", counted)
    limiter = _limiter(lambda: 0.0, per_second=1.0, burst=1, max_buckets=500, sweep_after=10)
    for i in range(10_000):
        limiter.retry_after(f"address:{i}", "predict")
        assert len(limiter.buckets) <= 500
    assert checks[0] <= 2 * 10_000
