"""`polyprobe probe`'s JSONL reader: held-out id ranges, labels by index, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from polyprobe.probe_client import ClientError, read_inputs

LABELS = ["not_paraphrase", "paraphrase"]


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _rows(ids: range) -> list[dict[str, object]]:
    return [{"id": i, "sentence1": f"a {i}", "sentence2": f"b {i}", "label": i % 2} for i in ids]


def test_ids_keep_only_the_rows_in_range_then_limit(tmp_path: Path) -> None:
    de = _write(tmp_path / "de.jsonl", _rows(range(10)))
    inputs = read_inputs([de], LABELS, limit=2, with_labels=True, ids=range(5, 9))
    assert inputs == [
        {"text": "a 5", "text_pair": "b 5", "label": "paraphrase", "lang": "de", "id": "de-5"},
        {"text": "a 6", "text_pair": "b 6", "label": "not_paraphrase", "lang": "de", "id": "de-6"},
    ]


def test_without_ids_every_row_is_read(tmp_path: Path) -> None:
    en = _write(tmp_path / "en.jsonl", _rows(range(4)))
    assert [i["id"] for i in read_inputs([en], LABELS, limit=None, with_labels=False)] == [
        "en-0",
        "en-1",
        "en-2",
        "en-3",
    ]


def test_an_empty_range_and_rows_without_ids_are_explained(tmp_path: Path) -> None:
    de = _write(tmp_path / "de.jsonl", _rows(range(4)))
    with pytest.raises(ClientError, match=r"de.jsonl has no rows with ids 100-199"):
        read_inputs([de], LABELS, limit=None, with_labels=True, ids=range(100, 200))
    bare = _write(tmp_path / "fr.jsonl", [{"sentence1": "a", "sentence2": "b"}])
    with pytest.raises(ClientError, match=r"fr.jsonl:1: --ids needs an integer `id`"):
        read_inputs([bare], LABELS, limit=None, with_labels=True, ids=range(0, 5))


def test_a_malformed_id_range_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    from polyprobe.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["probe", "run", "m", "--data", "x.jsonl", "--family", "char_swap", "--ids", "9-3"])
    assert exit_info.value.code == 2
    assert "must be ascending" in capsys.readouterr().err
