"""`polyprobe serve --ray` on a real two-node Ray cluster on loopback.

The head node listens on 127.0.0.2 and the worker on 127.0.0.3: both are loopback addresses, but
distinct, so the two raylets do not fight over one address's ports, and Ray does not rewrite them
to the machine's external address as it does 127.0.0.1. Each node has one CPU and each replica
asks for one, so two running replicas can only be one per node. Ray's own gRPC servers listen on
all interfaces (it has no option against that); every connection in this test is to 127.0.0.x.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

ray = pytest.importorskip(
    "ray", reason="Ray Serve tests need the ray extra: pip install 'polyprobe[ray]'"
)
serve_api = pytest.importorskip(
    "ray.serve", reason="Ray Serve tests need the ray extra: pip install 'polyprobe[ray]'"
)

HEAD_IP = "127.0.0.2"
WORKER_IP = "127.0.0.3"
RAY = str(Path(sys.executable).with_name("ray"))
# A head node turns token authentication on by itself when ~/.ray/auth_token exists (a local
# `ray.init()` writes one), while workers and drivers given an address do not: every process of
# the test says the same thing explicitly instead.
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
# Generous: on two shared cores a Ray node takes 10-60 s to start and a replica as long to load.
STARTUP_S = 300.0
PAIRS = [
    {"text": "Die Katze schläft im Garten.", "text_pair": "Die Katze schläft im Garten."},
    {"text": "猫は庭で寝ています。", "text_pair": "犬は駅で走っています。"},
    {"text": "Кошка спит в саду.", "text_pair": "Собака спит в саду."},
]
PROBE = {
    "inputs": [PAIRS[0] | {"id": str(i), "label": "paraphrase", "lang": "de"} for i in range(20)],
    "perturbations": [{"family": "char_swap", "severity": 0.3, "samples": 4}],
    "seed": 1,
}


def free_port(host: str) -> int:
    """An ephemeral port: above Ray's worker port range (10002-19999), so it cannot clash."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(condition: Any, what: str, timeout: float = STARTUP_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(0.5)


def session_pids(sid: int) -> list[int]:
    """Processes of one session: `ray start` and everything it spawned, actors included."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command: state, ppid, pgrp, session, ...
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


@dataclass
class RayNode:
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        """SIGTERM the node's whole session (as `ray stop` would, but only this node), then SIGKILL."""
        sid = self.process.pid
        for sig, grace in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
            for pid in session_pids(sid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + grace
            while session_pids(sid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if not session_pids(sid):
                break
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)


def start_node(args: list[str], log: Path) -> RayNode:
    # A session of its own, so teardown can find every process this node started and no other.
    process = subprocess.Popen(
        [RAY, "start", "--block", "--disable-usage-stats", *args],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=os.environ | RAY_ENV,
        start_new_session=True,
    )
    return RayNode(process)


def node_started(node: RayNode, log: Path) -> bool:
    """`ray start` says so once its raylet is up (and keeps running, with --block)."""
    assert node.process.poll() is None, log.read_text()
    return "Ray runtime started" in log.read_text(errors="replace")


@dataclass
class RayCluster:
    address: str
    nodes: list[RayNode] = field(default_factory=list)


@contextlib.contextmanager
def ray_cluster(temp_dir: Path) -> Iterator[RayCluster]:
    gcs_port = free_port(HEAD_IP)
    cluster = RayCluster(f"{HEAD_IP}:{gcs_port}")
    common = ["--num-cpus", "1", "--num-gpus", "0", "--object-store-memory", str(100 * 2**20)]
    common += ["--temp-dir", str(temp_dir)]
    try:
        head = start_node(
            [
                "--head",
                "--port",
                str(gcs_port),
                "--node-ip-address",
                HEAD_IP,
                "--include-dashboard=false",
                "--ray-client-server-port",
                str(free_port(HEAD_IP)),
                "--dashboard-agent-listen-port",
                str(free_port(HEAD_IP)),
                *common,
            ],
            temp_dir / "head.log",
        )
        cluster.nodes.append(head)

        wait_for(lambda: node_started(head, temp_dir / "head.log"), "the head node")
        worker = start_node(
            [
                "--address",
                cluster.address,
                "--node-ip-address",
                WORKER_IP,
                "--dashboard-agent-listen-port",
                str(free_port(WORKER_IP)),
                *common,
            ],
            temp_dir / "worker.log",
        )
        cluster.nodes.append(worker)
        wait_for(lambda: node_started(worker, temp_dir / "worker.log"), "the worker node")
        # Attached to the head's raylet: the driver has no node of its own at 127.0.0.1.
        ray.init(address=cluster.address, _node_ip_address=HEAD_IP, log_to_driver=False)

        def both_alive() -> bool:
            assert worker.process.poll() is None, (temp_dir / "worker.log").read_text()
            return sum(node["Alive"] for node in ray.nodes()) == 2

        wait_for(both_alive, "two live Ray nodes")
        yield cluster
    finally:
        if ray.is_initialized():
            with contextlib.suppress(Exception):
                serve_api.shutdown()
            ray.shutdown()
        for node in reversed(cluster.nodes):
            node.stop()


@dataclass
class RayServeProcess:
    process: subprocess.Popen[str]
    base_url: str
    log: list[str]

    def log_text(self) -> str:
        return "".join(self.log)


@contextlib.contextmanager
def serve_on_ray(model_repo: Path, env: dict[str, str]) -> Iterator[RayServeProcess]:
    port = free_port(HEAD_IP)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("POLYPROBE_")}
    environment |= env | RAY_ENV | {"POLYPROBE_HOST": HEAD_IP, "POLYPROBE_PORT": str(port)}
    process = subprocess.Popen(
        [sys.executable, "-m", "polyprobe", "serve", "--ray", "--model-repo", str(model_repo)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment,
    )
    log: list[str] = []

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            log.append(line)

    threading.Thread(target=pump, daemon=True).start()
    server = RayServeProcess(process, f"http://{HEAD_IP}:{port}", log)
    try:

        def deployed() -> bool:
            assert process.poll() is None, server.log_text()
            return "serving on Ray Serve at" in server.log_text()

        wait_for(deployed, "the Ray Serve application")
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def replicas_running() -> int:
    deployments = serve_api.status().applications["polyprobe"].deployments
    return int(deployments["polyprobe"].replica_states.get("RUNNING", 0))


def local_predictions(model_repo: Path) -> list[dict[str, Any]]:
    """The same bundle served in this process, to compare the cluster's answers with."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    settings = Settings(model_repo=model_repo, build_demo_if_empty=False)
    with TestClient(create_app(settings)) as client:
        response = client.post("/v1/models/demo/predict", json={"inputs": PAIRS})
    assert response.status_code == 200, response.text
    predictions: list[dict[str, Any]] = response.json()["predictions"]
    return predictions


def test_serve_ray_deploys_predicts_autoscales_across_two_nodes_and_tears_down(
    demo_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in RAY_ENV.items():
        monkeypatch.setenv(name, value)
    model_repo = tmp_path / "models"
    shutil.copytree(demo_bundle, model_repo / "demo" / "1")
    expected = local_predictions(model_repo)
    # Unix socket paths must stay under 108 bytes: pytest's tmp_path can be too deep for Ray.
    temp_dir = Path(tempfile.mkdtemp(prefix="pp-ray-", dir="/tmp"))
    env = {
        "POLYPROBE_RAY_PROXY_LOCATION": "HeadOnly",
        "POLYPROBE_RAY_MIN_REPLICAS": "1",
        "POLYPROBE_RAY_MAX_REPLICAS": "2",
        "POLYPROBE_RAY_TARGET_ONGOING_REQUESTS": "1",
        "POLYPROBE_RAY_MAX_ONGOING_REQUESTS": "4",
        "POLYPROBE_RAY_UPSCALE_DELAY_S": "1",
        "POLYPROBE_RAY_NUM_CPUS": "1",
        "POLYPROBE_INTRA_OP_THREADS": "1",
        "POLYPROBE_BUILD_DEMO_IF_EMPTY": "false",
    }
    try:
        with ray_cluster(temp_dir) as cluster:
            env["POLYPROBE_RAY_ADDRESS"] = cluster.address
            with serve_on_ray(model_repo, env) as server:
                http = httpx.Client(base_url=server.base_url, timeout=120)
                assert http.get("/readyz").status_code == 200, server.log_text()
                assert "polyprobe_model_ready" in http.get("/metrics").text
                response = http.post("/v1/models/demo/predict", json={"inputs": PAIRS})
                assert response.status_code == 200, response.text
                body = response.json()
                assert (body["model"], body["version"]) == ("demo", "1")
                for got, want in zip(body["predictions"], expected, strict=True):
                    assert got["label"] == want["label"]
                    assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-5)
                assert (
                    http.post("/v1/models/nope/predict", json={"inputs": PAIRS}).status_code == 404
                )
                assert replicas_running() == 1

                # Probes in flight from four clients keep about four requests per replica
                # against a target of one: the autoscaler has to add the second replica.
                stop = threading.Event()
                statuses: list[int] = []

                def load() -> None:
                    with httpx.Client(base_url=server.base_url, timeout=300) as client:
                        while not stop.is_set():
                            statuses.append(
                                client.post("/v1/models/demo/probe", json=PROBE).status_code
                            )

                clients = [threading.Thread(target=load) for _ in range(4)]
                for thread in clients:
                    thread.start()
                try:
                    wait_for(lambda: replicas_running() == 2, "the autoscaler's second replica")
                    # Each node has one CPU and each replica takes one: with none left, the
                    # two replicas run one on the head and one on the worker.
                    wait_for(
                        lambda: ray.available_resources().get("CPU", 0.0) == 0.0,
                        "both nodes' CPU to be held by replicas",
                    )
                    assert sorted(n["Resources"]["CPU"] for n in ray.nodes() if n["Alive"]) == [
                        1.0,
                        1.0,
                    ]
                    for _ in range(6):
                        again = http.post("/v1/models/demo/predict", json={"inputs": PAIRS})
                        assert again.status_code == 200, again.text
                        assert [p["label"] for p in again.json()["predictions"]] == [
                            p["label"] for p in expected
                        ]
                finally:
                    stop.set()
                    for thread in clients:
                        thread.join(timeout=300)
                assert statuses and set(statuses) == {200}, statuses

                server.process.send_signal(signal.SIGTERM)
                assert server.process.wait(timeout=180) == 0, server.log_text()
                # The proxy outlives the command; the application it routed to does not.
                assert http.get("/healthz").status_code == 404
                assert "polyprobe" not in serve_api.status().applications
                http.close()
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
