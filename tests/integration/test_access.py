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
# Each test that spends a limit has keys of its own, so the tests pass in any order.
PROBE_FIRST_KEY = "polyprobe-probe-first-key-0123"
PREDICT_FIRST_KEY = "polyprobe-predict-first-key-012"
BODY_KEY = "polyprobe-body-cap-key-0123456"
PAIR = {"text": "Die Katze schläft.", "text_pair": "Le chat dort."}
PROBE_BODY = {
    "inputs": [{**PAIR, "label": "paraphrase", "lang": "de"}],
    "perturbations": [{"family": "char_swap", "severity": 0.2}],
}
APP_ORIGIN = "https://app.example"


@pytest.fixture(scope="module")
def server(demo_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("access-repo")
    shutil.copytree(demo_bundle, repo / "demo" / "1")
    key_file = tmp_path_factory.mktemp("keys") / "keys.txt"
    key_file.write_text(f"# one key per line\n{OTHER_KEY}\n", encoding="utf-8")
    env = {
        "POLYPROBE_API_KEYS": ",".join([KEY, PROBE_FIRST_KEY, PREDICT_FIRST_KEY, BODY_KEY]),
        "POLYPROBE_API_KEYS_FILE": str(key_file),
        # Bursts of 3 predictions, refilled far slower than the test runs: the 4th is limited.
        "POLYPROBE_RATE_LIMIT_PER_SECOND": "0.01",
        "POLYPROBE_RATE_LIMIT_BURST": "3",
        # One probe at a time, refilled as slowly: the 2nd is limited.
        "POLYPROBE_PROBE_RATE_LIMIT_PER_SECOND": "0.01",
        "POLYPROBE_PROBE_RATE_LIMIT_BURST": "1",
        "POLYPROBE_MAX_BODY_BYTES": "4096",
        "POLYPROBE_CORS_ALLOW_ORIGINS": f'["{APP_ORIGIN}"]',
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


def _predict(client: httpx.Client, key: str) -> httpx.Response:
    return client.post("/v1/models/demo/predict", json={"inputs": [PAIR]}, headers=_auth(key))


def _probe(client: httpx.Client, key: str) -> httpx.Response:
    return client.post("/v1/models/demo/probe", json=PROBE_BODY, headers=_auth(key))


def _assert_limited(response: httpx.Response, traffic: str) -> None:
    assert response.status_code == 429, response.text
    assert int(response.headers["retry-after"]) >= 1
    error = response.json()["error"]
    assert error["type"] == "rate_limited"
    assert f"rate limit for {traffic} traffic" in error["message"]


def test_probes_have_a_limit_of_their_own(server: RunningServer) -> None:
    with server.client() as client:
        assert _probe(client, PROBE_FIRST_KEY).status_code == 200
        _assert_limited(_probe(client, PROBE_FIRST_KEY), "probe")
        _assert_limited(client.get("/v1/probe/jobs/any", headers=_auth(PROBE_FIRST_KEY)), "probe")
        # The same client's predictions (v1 and v2) draw on the prediction limit: still open.
        assert _predict(client, PROBE_FIRST_KEY).status_code == 200
        v2 = client.post(
            "/v2/models/demo/infer",
            json={
                "inputs": [
                    {"name": "text", "datatype": "BYTES", "shape": [1], "data": [PAIR["text"]]},
                    {
                        "name": "text_pair",
                        "datatype": "BYTES",
                        "shape": [1],
                        "data": [PAIR["text_pair"]],
                    },
                ]
            },
            headers=_auth(PROBE_FIRST_KEY),
        )
        assert v2.status_code == 200, v2.text


def test_spent_predictions_leave_the_probe_limit_alone(server: RunningServer) -> None:
    with server.client() as client:
        assert [_predict(client, PREDICT_FIRST_KEY).status_code for _ in range(3)] == [200] * 3
        _assert_limited(_predict(client, PREDICT_FIRST_KEY), "predict")
        assert _probe(client, PREDICT_FIRST_KEY).status_code == 200


def test_cors_answers_only_the_configured_origin(server: RunningServer) -> None:
    preflight = {"access-control-request-method": "POST"}
    with server.client() as client:
        # Preflights carry no credentials, so they are answered ahead of the key check.
        allowed = client.options(
            "/v1/models/demo/predict", headers=preflight | {"origin": APP_ORIGIN}
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == APP_ORIGIN
        other = client.options(
            "/v1/models/demo/predict", headers=preflight | {"origin": "https://evil.example"}
        )
        assert other.status_code == 400
        assert "access-control-allow-origin" not in other.headers
        # /healthz: an open route, so the limits the other tests spend do not get in the way.
        simple = client.get("/healthz", headers={"origin": APP_ORIGIN})
        assert simple.status_code == 200
        assert simple.headers["access-control-allow-origin"] == APP_ORIGIN
        foreign = client.get("/healthz", headers={"origin": "https://evil.example"})
        assert foreign.status_code == 200
        assert "access-control-allow-origin" not in foreign.headers


def test_oversized_bodies_get_413_declared_or_streamed(server: RunningServer) -> None:
    big = {"inputs": [{"text": "x" * 5000, "text_pair": "y"}]}
    with server.client() as client:
        declared = client.post("/v1/models/demo/probe", json=big, headers=_auth(BODY_KEY))
        assert declared.status_code == 413
        assert "POLYPROBE_MAX_BODY_BYTES" in declared.json()["error"]["message"]

        def chunks() -> Iterator[bytes]:
            yield b'{"inputs": [{"text": "'
            yield b"x" * 5000
            yield b'"}]}'

        # The predict route: this key's one probe is spent above.
        streamed = client.post(
            "/v1/models/demo/predict",
            content=chunks(),
            headers=_auth(BODY_KEY) | {"content-type": "application/json"},
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


def test_by_default_access_is_open_and_cors_is_off(demo_bundle: Path, tmp_path: Path) -> None:
    shutil.copytree(demo_bundle, tmp_path / "demo" / "1")
    with serve(tmp_path) as running, httpx.Client(base_url=running.base_url) as client:
        simple = client.get("/v1/models", headers={"origin": APP_ORIGIN})
        assert simple.status_code == 200
        assert "access-control-allow-origin" not in simple.headers
        preflight = client.options(
            "/v1/models/demo/predict",
            headers={"origin": APP_ORIGIN, "access-control-request-method": "POST"},
        )
        assert not any(h.startswith("access-control-") for h in preflight.headers)
