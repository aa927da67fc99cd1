"""A real Prometheus scrapes a real server; promtool checks the exposition, the rules and their tests.

Debian's `prometheus` package provides both binaries (`.ci/run` installs it); without them these
tests are skipped with the install command as the reason.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.server import RunningServer, serve

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PREDICT_ROUTE = "/v1/models/{model}/predict"
PAIR = {"text": "Die Katze schläft im Garten.", "text_pair": "Die Katze schläft im Garten."}

needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="needs Debian's prometheus package: apt-get install -y prometheus",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(demo_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("prometheus-repo")
    shutil.copytree(demo_bundle, repo / "demo" / "1")
    with serve(repo) as running, running.client() as client:
        for _ in range(5):
            client.post("/v1/models/demo/predict", json={"inputs": [PAIR]}).raise_for_status()
        yield running


def _promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


@needs_prometheus
def test_promtool_accepts_the_exposition(server: RunningServer) -> None:
    with server.client() as client:
        exposition = client.get("/metrics").text
    result = _promtool("check", "metrics", stdin=exposition)
    assert result.returncode == 0, result.stdout + result.stderr
    # promtool lints naming too (and exits 0 on lint findings): hold the exposition to it.
    assert result.stdout.strip() == "" and result.stderr.strip() == "", (
        result.stdout + result.stderr
    )


@needs_prometheus
def test_shipped_rules_are_valid_and_their_unit_tests_pass() -> None:
    checked = _promtool("check", "rules", str(DEPLOY / "prometheus" / "alerts.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = _promtool("test", "rules", str(DEPLOY / "prometheus" / "alerts.test.yml"))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    config = _promtool("check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr


def _metric_names_in(expression: str) -> set[str]:
    return set(re.findall(r"\b(polyprobe_[a-z0-9_]+)", expression))


_SERIES_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "gauge": ("",),
}


def _exposed_series_names(server: RunningServer) -> set[str]:
    """Every series name the exposition declares, including families with no samples yet."""
    with server.client() as client:
        text = client.get("/metrics").text
    return {
        family.name + suffix
        for family in text_string_to_metric_families(text)
        for suffix in _SERIES_SUFFIXES.get(family.type, ("",))
    }


def test_dashboard_and_alerts_only_query_metrics_the_service_exposes(
    server: RunningServer,
) -> None:
    exposed = _exposed_series_names(server)
    dashboard = json.loads((DEPLOY / "grafana" / "polyprobe-dashboard.json").read_text("utf-8"))
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in _metric_names_in(target["expr"])
    }
    queried |= _metric_names_in((DEPLOY / "prometheus" / "alerts.yml").read_text("utf-8"))
    assert queried, "no polyprobe metric found in the dashboard or the rules"
    assert queried <= exposed, f"queried but not exposed: {sorted(queried - exposed)}"


def _query(prometheus_url: str, expression: str) -> list[dict[str, object]]:
    response = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": expression}, timeout=10)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def _wait_until_ready(prometheus_url: str, deadline: float) -> None:
    """Prometheus answers queries with 503 until its storage is up (slow on a loaded machine)."""
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{prometheus_url}/-/ready", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("Prometheus never became ready")


@needs_prometheus
def test_real_prometheus_scrapes_and_computes_latency_quantiles(
    server: RunningServer, tmp_path: Path
) -> None:
    target = server.base_url.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n  - job_name: polyprobe\n"
        f"    static_configs:\n      - targets: ['{target}']\n",
        encoding="utf-8",
    )
    port = _free_port()
    prometheus_url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    p99 = (
        "histogram_quantile(0.99, sum by (le) "
        f'(rate(polyprobe_request_duration_seconds_bucket{{route="{PREDICT_ROUTE}"}}[1m])))'
    )
    try:
        deadline = time.monotonic() + 90
        _wait_until_ready(prometheus_url, deadline)
        result: list[dict[str, object]] = []
        with server.client() as client:
            while time.monotonic() < deadline:
                # Keep traffic flowing so rate() over the scrapes sees increases.
                client.post("/v1/models/demo/predict", json={"inputs": [PAIR]}).raise_for_status()
                try:
                    result = _query(prometheus_url, p99)
                except httpx.TransportError:
                    result = []
                if result and result[0]["value"][1] not in ("NaN", "+Inf"):  # type: ignore[index]
                    break
                time.sleep(0.5)
        assert result, "Prometheus never computed a predict p99 from the scraped histograms"
        seconds = float(result[0]["value"][1])  # type: ignore[index]
        assert 0 < seconds < 30
        up = _query(prometheus_url, 'up{job="polyprobe"}')
        assert [float(series["value"][1]) for series in up] == [1.0]  # type: ignore[index]
    finally:
        process.terminate()
        process.wait(timeout=30)
