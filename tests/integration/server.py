"""Run `polyprobe serve` as a real process on a free loopback port, for integration tests."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

_LISTENING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


@dataclass
class RunningServer:
    process: subprocess.Popen[str]
    base_url: str
    log: list[str] = field(default_factory=list)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=60)

    def log_text(self) -> str:
        return "".join(self.log)


@contextmanager
def serve(
    model_repo: Path,
    env: dict[str, str] | None = None,
    startup_timeout: float = 240,
    python: str = sys.executable,
) -> Iterator[RunningServer]:
    """Start the server with `--port 0` (with `python`: another install's interpreter) and learn
    the port it bound from its log."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("POLYPROBE_")}
    environment.update(env or {})
    process = subprocess.Popen(
        [
            python,
            "-m",
            "polyprobe",
            "serve",
            "--model-repo",
            str(model_repo),
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment,
    )
    log: list[str] = []
    port: list[int] = []

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            log.append(line)
            match = _LISTENING.search(line)
            if match:
                port.append(int(match.group(1)))

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + startup_timeout
    while not port:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("server did not start:\n" + "".join(log))
        time.sleep(0.05)
    server = RunningServer(process, f"http://127.0.0.1:{port[0]}", log)
    try:
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
