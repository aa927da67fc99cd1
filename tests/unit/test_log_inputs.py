"""POLYPROBE_LOG_INPUTS: which texts of a request body reach the access log, and how clipped."""

from __future__ import annotations

import json
import logging
import struct

from hypothesis import given
from hypothesis import strategies as st

from service.logs import (
    LOGGED_INPUTS,
    LOGGED_TEXT_CHARS,
    JsonFormatter,
    TextFormatter,
    clip_text,
    logged_inputs,
)


def _bytes_tensor(values: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)


def test_short_texts_are_kept_and_long_ones_clipped_with_a_mark() -> None:
    assert clip_text("kurz") == "kurz"
    exact = "x" * LOGGED_TEXT_CHARS
    assert clip_text(exact) == exact
    assert clip_text("é" * (LOGGED_TEXT_CHARS + 37)) == "é" * LOGGED_TEXT_CHARS + "…[+37 chars]"


def test_v1_inputs_are_logged_per_input() -> None:
    long = "Lorem ipsum " * 30
    body = json.dumps(
        {"inputs": [{"text": "Die Katze schläft.", "text_pair": long}, {"text": "b"}]}
    ).encode()
    assert logged_inputs(body) == {
        "inputs": [
            {"text": "Die Katze schläft.", "text_pair": clip_text(long)},
            {"text": "b"},
        ]
    }


def test_v2_json_tensors_become_rows() -> None:
    body = json.dumps(
        {
            "inputs": [
                {"name": "text", "datatype": "BYTES", "shape": [2, 1], "data": [["a"], ["b"]]},
                {"name": "text_pair", "datatype": "BYTES", "shape": [2], "data": ["c", "d"]},
            ]
        }
    ).encode()
    assert logged_inputs(body) == {
        "inputs": [{"text": "a", "text_pair": "c"}, {"text": "b", "text_pair": "d"}]
    }


def test_v2_binary_tensors_are_decoded() -> None:
    texts, pairs = ["Der Zug fährt.", "東京"], ["Le train part.", "Tokyo"]
    blobs = [_bytes_tensor(texts), _bytes_tensor(pairs)]
    header = json.dumps(
        {
            "inputs": [
                {"name": n, "datatype": "BYTES", "shape": [2],
                 "parameters": {"binary_data_size": len(blob)}}
                for n, blob in zip(("text", "text_pair"), blobs, strict=True)
            ],
            "outputs": [{"name": "label", "parameters": {"binary_data": True}}],
        }
    ).encode()  # fmt: skip
    fields = logged_inputs(header + b"".join(blobs), str(len(header)))
    assert fields == {
        "inputs": [
            {"text": "Der Zug fährt.", "text_pair": "Le train part."},
            {"text": "東京", "text_pair": "Tokyo"},
        ]
    }


def test_a_large_probe_is_logged_up_to_the_bound() -> None:
    body = json.dumps(
        {"inputs": [{"text": f"t{i}", "label": 0} for i in range(LOGGED_INPUTS + 5)]}
    ).encode()
    fields = logged_inputs(body)
    assert len(fields["inputs"]) == LOGGED_INPUTS
    assert fields["inputs"][-1] == {"text": f"t{LOGGED_INPUTS - 1}"}
    assert fields["inputs_not_logged"] == 5


def test_bodies_without_texts_log_nothing() -> None:
    for body in (b"", b"not json", b"\xff\xfe", b"[1, 2]", b'{"inputs": []}', b'{"model_a": "x"}',
                 b'{"inputs": [{"text": 3}]}', b"[" * 100_000):  # fmt: skip
        assert logged_inputs(body) == {}, body[:20]


@given(st.binary(max_size=300), st.one_of(st.none(), st.from_regex(r"\A[0-9]{1,3}\Z")))
def test_any_body_is_logged_without_raising(body: bytes, header_length: str | None) -> None:
    logged_inputs(body, header_length)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["inputs", "name", "text", "text_pair", "data", "parameters",
                         "binary_data_size"]), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip


@given(_JSON, st.binary(max_size=40))
def test_any_json_shape_is_logged_without_raising(request: object, binary: bytes) -> None:
    header = json.dumps(request).encode()
    logged_inputs(header + binary, str(len(header)))


def _access_record(fields: dict[str, object]) -> logging.LogRecord:
    record = logging.LogRecord(
        "polyprobe.access", logging.INFO, __file__, 1, "POST %s", ("/x",), None
    )
    record.fields = fields
    return record


def test_formatters_show_the_inputs() -> None:
    fields: dict[str, object] = {"request_id": "r1", "inputs": [{"text": "Geheimnis"}]}
    text = TextFormatter("%(levelname)s %(name)s: %(message)s").format(_access_record(fields))
    assert text == 'INFO polyprobe.access: POST /x inputs=[{"text": "Geheimnis"}]'
    entry = json.loads(JsonFormatter().format(_access_record(fields)))
    assert entry["inputs"] == [{"text": "Geheimnis"}]
    plain = TextFormatter("%(message)s").format(_access_record({"request_id": "r1"}))
    assert plain == "POST /x"
