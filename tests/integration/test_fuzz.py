"""Fuzzing the live server: schemathesis over the OpenAPI schema, hypothesis over hostile Unicode.

Either way the contract is the same: a client error is answered with a 4xx that names the problem,
never a 5xx, a hang or a dropped connection.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.server import RunningServer, serve

pytestmark = pytest.mark.integration

SCHEMATHESIS_CONFIG = Path(__file__).with_name("schemathesis.toml")
# pytest-timeout's 600 s (pyproject) also covers building the demo bundle and starting the
# server (up to 240 s) when this test is the first to need them. The run (about 10 s on 2 cores)
# gets half, so a slow one fails with schemathesis's own output, not a pytest-timeout traceback.
SCHEMATHESIS_TIMEOUT_S = 300
CLIENT_ERRORS = {400, 404, 405, 413, 422}
LABELS = {"not_paraphrase", "paraphrase"}

# Text built to hurt: floods of combining marks, bidi overrides and isolates, zero-width
# characters, noncharacters, astral-plane emoji with modifiers, and long runs. All of it is text
# the service must take and classify.
HOSTILE_PIECES = [
    "\u0301" * 500,
    "a" + "\u0308\u0301\u0323" * 200,
    "\u202e",
    "\u2066abc\u2069",
    "\u200b\u200c\u200d\ufeff",
    "\ufffe\uffff",
    "👩🏽‍🚀" * 50,
    "क्‍ष",
    "ﷺ" * 100,
    "\u3000" * 50,
    "x" * 1_500,
]
# And text it must refuse with a 4xx: control characters, and a run over the length limit.
REFUSED_PIECES = ["\x00", "\x1b[31m", "\x85", "x" * 20_000]
takeable_text = st.lists(
    st.one_of(
        st.sampled_from(HOSTILE_PIECES),
        st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=50),
    ),
    min_size=1,
    max_size=6,
).map("".join)
any_text = st.lists(
    st.one_of(st.sampled_from(HOSTILE_PIECES + REFUSED_PIECES), st.text(max_size=50)),
    max_size=6,
).map("".join)
# Half the examples get past validation to the tokenizer, the model and the perturbations;
# unfiltered text alone would be refused nearly every time and never reach them.
hostile_text = st.one_of(takeable_text, any_text)
FUZZ_SETTINGS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


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
    command = [
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
    ]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=SCHEMATHESIS_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as slow:
        pytest.fail(
            f"schemathesis ran past {SCHEMATHESIS_TIMEOUT_S} s; its output so far:\n"
            + _text(slow.stdout)[-6000:]
            + _text(slow.stderr)[-2000:]
        )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in result.stdout


def _text(output: bytes | str | None) -> str:
    # TimeoutExpired carries the raw bytes read so far, whatever `text=True` asked for.
    if isinstance(output, bytes):
        return output.decode("utf-8", "replace")
    return output or ""


@settings(FUZZ_SETTINGS, max_examples=60)
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
        assert prediction["label"] in LABELS
    else:
        assert response.status_code in CLIENT_ERRORS, response.text
        assert response.json()["error"]["message"]


def _assert_clear_v2_refusal(response: httpx.Response) -> None:
    assert response.status_code in CLIENT_ERRORS, response.text
    error = response.json()["error"]
    assert isinstance(error, str) and error


def _assert_v2_labels(response: httpx.Response) -> None:
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert set(outputs["label"]["data"]) <= LABELS


@settings(FUZZ_SETTINGS, max_examples=40)
@given(text=hostile_text, text_pair=st.one_of(st.none(), hostile_text))
def test_hostile_unicode_in_v2_json_tensors_gets_an_answer_or_a_clear_4xx(
    server: RunningServer, text: str, text_pair: str | None
) -> None:
    inputs = [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [text]}]
    if text_pair is not None:
        inputs.append({"name": "text_pair", "datatype": "BYTES", "shape": [1], "data": [text_pair]})
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        response = client.post("/v2/models/demo/infer", json={"inputs": inputs})
    if response.status_code == 200:
        _assert_v2_labels(response)
    else:
        _assert_clear_v2_refusal(response)


# Binary tensor elements: hostile text as UTF-8, or bytes that are not UTF-8 at all.
hostile_element = st.one_of(hostile_text.map(str.encode), st.binary(max_size=64))


def _binary_infer_body(elements: dict[str, bytes]) -> tuple[bytes, int]:
    """A v2 request with BYTES tensors as binary data: the JSON header, then each tensor's
    length-prefixed elements (Triton's BYTES layout)."""
    blobs = {name: struct.pack("<I", len(value)) + value for name, value in elements.items()}
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": len(blob)},
                }
                for name, blob in blobs.items()
            ],
            "parameters": {"binary_data_output": False},
        }
    ).encode("utf-8")
    return header + b"".join(blobs.values()), len(header)


@settings(FUZZ_SETTINGS, max_examples=40)
@given(text=hostile_element, text_pair=hostile_element)
def test_hostile_bytes_in_v2_binary_tensors_get_an_answer_or_a_clear_4xx(
    server: RunningServer, text: bytes, text_pair: bytes
) -> None:
    body, header_length = _binary_infer_body({"text": text, "text_pair": text_pair})
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        response = client.post(
            "/v2/models/demo/infer",
            content=body,
            headers={
                "content-type": "application/octet-stream",
                "inference-header-content-length": str(header_length),
            },
        )
    if response.status_code == 200:
        _assert_v2_labels(response)
    else:
        _assert_clear_v2_refusal(response)


@settings(FUZZ_SETTINGS, max_examples=25)
@given(
    text=hostile_text,
    text_pair=st.one_of(st.none(), hostile_text),
    lang=st.one_of(st.none(), st.sampled_from(["en", "de", "ja", "ar"])),
)
def test_hostile_unicode_in_a_probe_gets_an_answer_or_a_clear_4xx(
    server: RunningServer, text: str, text_pair: str | None, lang: str | None
) -> None:
    item: dict[str, Any] = {"text": text, "text_pair": text_pair, "label": "paraphrase"}
    if lang is not None:
        item["lang"] = lang
    body = {
        "inputs": [item],
        # One text family and one pair family, one sample each: small enough to stay fast.
        "perturbations": [
            {"family": "char_swap", "severity": 0.3},
            {"family": "pair_word_order", "severity": 0.5},
        ],
        "seed": 1,
    }
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        response = client.post("/v1/models/demo/probe", json=body)
    if response.status_code == 200:
        assert response.json()["model"]["name"] == "demo"
    else:
        assert response.status_code in CLIENT_ERRORS, response.text
        assert response.json()["error"]["message"]
