"""`polyprobe probe run|compare` against the real server with the demo bundle: the tables, the
job mode with progress from the event stream, `--json`, and clear failures."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from polyprobe.cli import main
from tests.integration.conftest import copy_bundle
from tests.integration.server import RunningServer, serve
from tests.integration.test_probe import PAIRS

pytestmark = pytest.mark.integration

LABELS = ["not_paraphrase", "paraphrase"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, demo_bundle: Path) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("client-repo")
    copy_bundle(demo_bundle, repo, "demo", "1")
    copy_bundle(demo_bundle, repo, "twin", "1")
    with serve(repo, {"POLYPROBE_PROBE_BOOTSTRAP_RESAMPLES": "300"}) as running:
        yield running


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """PAWS-X-style files: named by language, integer labels indexing the model's labels."""
    folder = tmp_path_factory.mktemp("data")
    paths = []
    for lang in ("de", "en", "ru"):
        path = folder / f"{lang}.jsonl"
        rows = [
            {"id": i, "sentence1": t, "sentence2": p, "label": LABELS.index(label)}
            for i, (t, p, label) in enumerate(PAIRS[lang])
        ]
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
        paths.append(path)
    return paths


def cli(
    capsys: pytest.CaptureFixture[str], server: RunningServer, *args: str | Path
) -> tuple[int, str, str]:
    status = main(["probe", *map(str, args), "--url", server.base_url])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def without_timing(report: dict[str, Any]) -> dict[str, Any]:
    return {**report, "timing": None}


def test_run_prints_a_per_language_table_with_intervals(
    capsys: pytest.CaptureFixture[str], server: RunningServer, data: list[Path]
) -> None:
    status, out, err = cli(
        capsys, server, "run", "demo", "--data", *data, "--family", "char_swap",
        "--severity", "0.2", "--samples", "3",
    )  # fmt: skip
    assert status == 0, err
    assert out.startswith("model demo/1 (")
    rows = {
        line.split()[0]: line
        for line in out.splitlines()
        if re.match(r"^(de|en|ru)\s+char_swap\s+0\.2\s", line)
    }
    assert set(rows) == {"de", "en", "ru"}
    interval = r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]"
    for line in rows.values():
        assert len(re.findall(interval, line)) == 3  # clean acc, perturbed acc, flip rate
    assert "clean predictions per language" in out


def test_json_output_is_the_servers_body_for_the_same_request(
    capsys: pytest.CaptureFixture[str], server: RunningServer, data: list[Path]
) -> None:
    status, out, _ = cli(
        capsys, server, "run", "demo", "--data", data[0], "--family", "char_swap,keyboard_typo",
        "--severity", "0.2", "--seed", "5", "--json",
    )  # fmt: skip
    assert status == 0
    sent = {
        "inputs": [
            {"text": t, "text_pair": p, "label": label, "lang": "de", "id": f"de-{i}"}
            for i, (t, p, label) in enumerate(PAIRS["de"])
        ],
        "perturbations": [
            {"family": "char_swap", "severity": 0.2, "samples": 1},
            {"family": "keyboard_typo", "severity": 0.2, "samples": 1},
        ],
        "seed": 5,
    }
    with server.client() as http:
        direct = http.post("/v1/models/demo/probe", json=sent).json()
    assert without_timing(json.loads(out)) == without_timing(direct)


def test_job_mode_shows_progress_and_gives_the_same_report(
    capsys: pytest.CaptureFixture[str], server: RunningServer, data: list[Path]
) -> None:
    args = ("run", "demo", "--data", *data, "--family", "char_swap", "--samples", "4", "--json")
    status, direct, _ = cli(capsys, server, *args)
    assert status == 0
    status, out, err = cli(capsys, server, *args, "--job")
    assert status == 0, err
    assert re.search(r"^job [0-9a-f]{32} submitted$", err, re.M)
    progress = re.findall(r"(\d+)/(\d+) evaluations", err)
    assert progress and progress[-1][0] == progress[-1][1]  # the last event: all done
    assert without_timing(json.loads(out)) == without_timing(json.loads(direct))


def test_compare_prints_paired_differences(
    capsys: pytest.CaptureFixture[str], server: RunningServer, data: list[Path]
) -> None:
    status, out, err = cli(
        capsys, server, "compare", "demo", "twin", "--data", *data, "--family", "char_swap",
        "--severity", "0.2", "--job",
    )  # fmt: skip
    assert status == 0, err
    assert out.startswith("model_a demo/1 vs model_b twin/1")
    diffs = [line for line in out.splitlines() if re.match(r"^(de|en|ru)\s+char_swap", line)]
    assert len(diffs) == 3
    assert all("0.000 [0.000, 0.000]" in line for line in diffs)  # identical models


def test_an_attack_prints_success_rates_per_language(
    capsys: pytest.CaptureFixture[str], server: RunningServer, data: list[Path]
) -> None:
    status, out, err = cli(
        capsys, server, "run", "demo", "--data", *data, "--family", "attack",
        "--severity", "0.5", "--query-budget", "30",
    )  # fmt: skip
    assert status == 0, err
    assert "attack perturbations[0]: up to 30 queries per input" in out
    assert re.search(r"^all\s+12\s+\d\.\d{3} \[", out, re.M)


def test_a_dominant_class_is_warned_about(
    capsys: pytest.CaptureFixture[str], server: RunningServer, tmp_path: Path
) -> None:
    path = tmp_path / "en.jsonl"
    row = {"text": "The cat is in the garden.", "text_pair": "There is a cat in the garden."}
    path.write_text("".join(json.dumps({**row, "id": i}) + "\n" for i in range(12)), "utf-8")
    status, out, _ = cli(capsys, server, "run", "demo", "--data", path, "--family", "char_swap")
    assert status == 0
    assert re.search(
        r"^warning: lang en: 100\.0% of clean predictions are '\w+' \(n=12\)", out, re.M
    )


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (None, ("--family", "typo"), "HTTP 422: perturbations[0].family: unknown perturbation family 'typo'"),
        ("{not json\n", ("--family", "char_swap"), "en.jsonl:1 is not JSON"),
        ('{"text": "a", "text_pair": "b", "label": 7}\n', ("--family", "char_swap"), "label index 7 is out of range"),
        ('{"title": "a"}\n', ("--family", "char_swap"), "has no text: expected one of sentence1/sentence2"),
    ],
)  # fmt: skip
def test_failures_exit_1_with_the_reason(
    capsys: pytest.CaptureFixture[str],
    server: RunningServer,
    data: list[Path],
    tmp_path: Path,
    content: str | None,
    args: tuple[str, ...],
    message: str,
) -> None:
    path = data[1]
    if content is not None:
        path = tmp_path / "en.jsonl"
        path.write_text(content, "utf-8")
    status, out, err = cli(capsys, server, "run", "demo", "--data", path, *args)
    assert (status, out) == (1, "")
    assert message in err and err.startswith("polyprobe probe: ")


def test_an_unreachable_server_is_a_clear_failure(
    capsys: pytest.CaptureFixture[str], data: list[Path]
) -> None:
    status = main(
        ["probe", "run", "demo", "--data", str(data[0]), "--family", "char_swap",
         "--url", "http://127.0.0.1:9"]  # the discard port: nothing listens there
    )  # fmt: skip
    err = capsys.readouterr().err
    assert status == 1 and "GET http://127.0.0.1:9/v1/models/demo failed" in err
