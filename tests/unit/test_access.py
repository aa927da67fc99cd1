from __future__ import annotations

from pathlib import Path

import pytest

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


def test_probe_routes_are_probe_traffic() -> None:
    assert traffic_class("/v1/models/demo/probe") == "probe"
    assert traffic_class("/v1/probe/jobs/abc") == "probe"
    assert traffic_class("/v1/models/demo/predict") == "predict"
    assert traffic_class("/v2/models/demo/infer") == "predict"
