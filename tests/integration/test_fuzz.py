"""Fuzzing the live server: schemathesis over the OpenAPI schema, hypothesis over hostile Unicode.

Either way the contract is the same: a client error is answered with a 4xx that names the problem,
never a 5xx, a hang or a dropped connection.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.server import RunningServer, serve

pytestmark = pytest.mark.integration

SCHEMATHESIS_CONFIG = Path(__file__).with_name("schemathesis.toml")
CLIENT_ERRORS = {400, 404, 405, 413, 422}

# Text built to hurt: floods of combining marks, bidi overrides and isolates, zero-width and
# control characters, noncharacters, astral-plane emoji with modifiers, and very long runs.
HOSTILE_PIECES = [
    "\u0301" * 500,
    "a" + "\u0308\u0301\u0323" * 200,
    "\u202e",
    "\u2066abc\u2069",
    "\u200b\u200c\u200d\ufeff",
    "\x00",
    "\x1b[31m",
    "\ufffe\uffff",
    "👩🏽‍🚀" * 50,
    "क्‍ष",
    "ﷺ" * 100,
    "\u3000" * 50,
    "x" * 20_000,
]
hostile_text = st.lists(
    st.one_of(st.sampled_from(HOSTILE_PIECES), st.text(max_size=50)), min_size=0, max_size=6
).map("".join)


@pytest.fixture(scope="module")
def server(demo_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("fuzz-repo")
    shutil.copytree(demo_bundle, repo / "demo" / "1")
    with serve(repo) as running:
        yield running


def test_schemathesis_finds_no_server_error_on_any_route(server: RunningServer) -> None:
    schemathesis = shutil.which("st", path=str(Path(sys.executable).parent))
    if schemathesis is None:
        pytest.skip("needs schemathesis (in the dev extra): pip install -e '.[dev]'")
    result = subprocess.run(
        [
            schemathesis,
            "--no-color",
            "--config-file",
            str(SCHEMATHESIS_CONFIG),
            "run",
            f"{server.base_url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "15",
            "--seed",
            "1",
            "--request-timeout",
            "60",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in result.stdout


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=hostile_text, text_pair=st.one_of(st.none(), hostile_text))
def test_hostile_unicode_gets_an_answer_or_a_clear_4xx(
    server: RunningServer, text: str, text_pair: str | None
) -> None:
    item: dict[str, str] = {"text": text}
    if text_pair is not None:
        item["text_pair"] = text_pair
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        response = client.post("/v1/models/demo/predict", json={"inputs": [item]})
    if response.status_code == 200:
        prediction = response.json()["predictions"][0]
        assert prediction["label"] in {"not_paraphrase", "paraphrase"}
    else:
        assert response.status_code in CLIENT_ERRORS, response.text
        assert response.json()["error"]["message"]
