"""API keys, rate limits and the body cap, against the real server process."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.server import RunningServer, serve

pytestmark = pytest.mark.integration

KEY = "polyprobe-test-key-0123456789"
OTHER_KEY = "polyprobe-other-key-987654321"
PAIR = {"text": "Die Katze schläft.", "text_pair": "Le chat dort."}


@pytest.fixture(scope="module")
def server(demo_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("access-repo")
    shutil.copytree(demo_bundle, repo / "demo" / "1")
    key_file = tmp_path_factory.mktemp("keys") / "keys.txt"
    key_file.write_text(f"# one key per line\n{OTHER_KEY}\n", encoding="utf-8")
    env = {
        "POLYPROBE_API_KEYS": KEY,
        "POLYPROBE_API_KEYS_FILE": str(key_file),
        # Bursts of 3 predictions, refilled far slower than the test runs: the 4th is limited.
        "POLYPROBE_RATE_LIMIT_PER_SECOND": "0.01",
        "POLYPROBE_RATE_LIMIT_BURST": "3",
        "POLYPROBE_MAX_BODY_BYTES": "4096",
    }
    with serve(repo, env=env) as running:
        yield running


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_health_readiness_and_metrics_need_no_key(server: RunningServer) -> None:
    with server.client() as client:
        for path in ("/healthz", "/readyz", "/metrics"):
            assert client.get(path).status_code == 200, path


def test_missing_and_wrong_keys_get_401(server: RunningServer) -> None:
    with server.client() as client:
        missing = client.get("/v1/models")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        assert "missing" in missing.json()["error"]["message"]
        wrong = client.get("/v1/models", headers=_auth(KEY + "x"))
        assert wrong.status_code == 401
        assert wrong.json()["error"]["type"] == "unauthorized"


def test_rate_limit_per_key_then_429_with_retry_after(server: RunningServer) -> None:
    with server.client() as client:
        statuses = [
            client.post(
                "/v1/models/demo/predict", json={"inputs": [PAIR]}, headers=_auth(KEY)
            ).status_code
            for _ in range(3)
        ]
        assert statuses == [200, 200, 200]
        limited = client.post(
            "/v1/models/demo/predict", json={"inputs": [PAIR]}, headers=_auth(KEY)
        )
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.json()["error"]["type"] == "rate_limited"
        # Another key (from the key file) has its own bucket.
        other = client.post(
            "/v1/models/demo/predict", json={"inputs": [PAIR]}, headers=_auth(OTHER_KEY)
        )
        assert other.status_code == 200


def test_oversized_bodies_get_413_declared_or_streamed(server: RunningServer) -> None:
    big = {"inputs": [{"text": "x" * 5000, "text_pair": "y"}]}
    with server.client() as client:
        declared = client.post("/v1/models/demo/probe", json=big, headers=_auth(OTHER_KEY))
        assert declared.status_code == 413
        assert "POLYPROBE_MAX_BODY_BYTES" in declared.json()["error"]["message"]

        def chunks() -> Iterator[bytes]:
            yield b'{"inputs": [{"text": "'
            yield b"x" * 5000
            yield b'"}]}'

        streamed = client.post(
            "/v1/models/demo/probe",
            content=chunks(),
            headers=_auth(OTHER_KEY) | {"content-type": "application/json"},
        )
        assert streamed.status_code == 413


def test_unreadable_key_file_stops_the_server_with_a_clear_message(
    demo_bundle: Path, tmp_path: Path
) -> None:
    shutil.copytree(demo_bundle, tmp_path / "demo" / "1")
    absent = tmp_path / "absent.txt"
    with (
        pytest.raises(RuntimeError, match=f"polyprobe serve: .*No such file.*{absent}"),
        serve(tmp_path, env={"POLYPROBE_API_KEYS_FILE": str(absent)}),
    ):
        pass


def test_no_key_configured_means_open_access(demo_bundle: Path, tmp_path: Path) -> None:
    shutil.copytree(demo_bundle, tmp_path / "demo" / "1")
    with serve(tmp_path) as running, httpx.Client(base_url=running.base_url) as client:
        assert client.get("/v1/models").status_code == 200
