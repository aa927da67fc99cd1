"""The Dockerfile's runtime settings, entrypoint and healthcheck, run outside Docker (no engine here).

The image is the serving install (`pip install .[serve]`) plus the environment and the commands read
from the Dockerfile itself, so the test follows the file as it changes. `.ci/run` makes that install
in a virtual environment of its own and names its interpreter in SERVE_INSTALL_PYTHON: the server
and healthcheck here then run from it, without torch, as in the image.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from service.settings import Settings
from tests.integration.server import serve

pytestmark = pytest.mark.integration

DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile"
SERVE_PYTHON = os.environ.get("SERVE_INSTALL_PYTHON", sys.executable)


def _instruction_arguments(keyword: str) -> list[str]:
    """The arguments of every `keyword` instruction, continuation lines joined."""
    text = DOCKERFILE.read_text("utf-8").replace("\\\n", " ")
    return [
        match.group(1).strip()
        for match in re.finditer(rf"^{keyword}\s+(.*)$", text, flags=re.MULTILINE)
    ]


def _image_environment() -> dict[str, str]:
    runtime_env = _instruction_arguments("ENV")[-1]
    pairs = re.findall(r"([A-Z_][A-Z0-9_]*)=(\S+)", runtime_env)
    return {name: value for name, value in pairs if name.startswith("POLYPROBE_")}


def _exec_form(arguments: str) -> list[str]:
    command = json.loads(arguments)
    assert isinstance(command, list) and all(isinstance(part, str) for part in command)
    return command


def test_image_environment_is_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    environment = _image_environment()
    assert environment["POLYPROBE_MODEL_REPO"] == "/models"
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.model_repo == Path("/models")
    assert settings.build_demo_if_empty is False


def test_entrypoint_refuses_an_empty_volume_with_a_clear_message(tmp_path: Path) -> None:
    entrypoint = _exec_form(_instruction_arguments("ENTRYPOINT")[-1])
    assert entrypoint == ["polyprobe", "serve"]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("POLYPROBE_")}
    environment |= _image_environment() | {
        "POLYPROBE_MODEL_REPO": str(tmp_path),
        "POLYPROBE_HOST": "127.0.0.1",
    }
    result = subprocess.run(
        [SERVE_PYTHON, "-m", "polyprobe", *entrypoint[1:]],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert f"no models in {tmp_path}" in result.stderr


def test_entrypoint_serves_a_mounted_repository_and_passes_the_healthcheck(
    demo_bundle: Path, tmp_path: Path
) -> None:
    shutil.copytree(demo_bundle, tmp_path / "demo" / "1")
    # Loopback rather than the image's 0.0.0.0: tests never listen beyond this machine.
    environment = _image_environment() | {"POLYPROBE_HOST": "127.0.0.1"}
    healthcheck = _instruction_arguments("HEALTHCHECK")[-1]
    probe = _exec_form(healthcheck[healthcheck.index("CMD") + len("CMD") :].strip())
    assert probe[0] == "python"

    def run_healthcheck(port: str) -> subprocess.CompletedProcess[str]:
        # The port a user gives the container (POLYPROBE_PORT) is the one the check must call.
        env = {k: v for k, v in os.environ.items() if not k.startswith("POLYPROBE_")}
        env |= environment | {"POLYPROBE_PORT": port}
        return subprocess.run(
            [SERVE_PYTHON, *probe[1:]],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    with serve(tmp_path, env=environment, python=SERVE_PYTHON) as server:
        port = server.base_url.rsplit(":", 1)[1]
        assert run_healthcheck(port).returncode == 0
        with server.client() as client:
            assert client.get("/readyz").status_code == 200
            pair = {"text": "Die Katze schläft.", "text_pair": "Le chat dort."}
            answer = client.post("/v1/models/demo/predict", json={"inputs": [pair]})
            assert answer.status_code == 200, answer.text
            assert answer.json()["predictions"][0]["label"] in {"paraphrase", "not_paraphrase"}
    assert run_healthcheck(port).returncode != 0


@pytest.mark.skipif(
    "SERVE_INSTALL_PYTHON" not in os.environ,
    reason="SERVE_INSTALL_PYTHON names no `pip install .[serve]` environment (.ci/run makes one)",
)
def test_the_serving_install_has_no_torch_transformers_or_optimum() -> None:
    check = (
        "import importlib.util as u; "
        "print(','.join(m for m in ('torch', 'transformers', 'optimum') if u.find_spec(m)))"
    )
    result = subprocess.run(
        [SERVE_PYTHON, "-c", check], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == ""
