"""Robustness probes against the real server and the demo bundle, over HTTP: reports with
intervals per language and script, reproducibility, refusals, comparison, metrics and jobs."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import copy_bundle
from tests.integration.server import RunningServer, serve

pytestmark = pytest.mark.integration

MAX_EVALUATIONS = 300
PROBE = "/v1/models/demo/probe"
PARA, NOT = "paraphrase", "not_paraphrase"

# Two paraphrases (two templates, one meaning) and two non-paraphrases per language, written
# like the demo corpus; the Spanish pair comes without a lang, so the server detects it.
PAIRS = {
    "en": [
        ("The cat is in the garden.", "There is a cat in the garden.", PARA),
        ("The dog is in the kitchen.", "There is a dog in the kitchen.", PARA),
        ("The cat is in the garden.", "There is a dog in the garden.", NOT),
        ("The dog is in the kitchen.", "There is a dog on the roof.", NOT),
    ],
    "de": [
        ("Die Katze ist im Garten.", "Im Garten ist eine Katze.", PARA),
        ("Der Hund ist in der Küche.", "In der Küche ist ein Hund.", PARA),
        ("Die Katze ist im Garten.", "Im Garten ist ein Hund.", NOT),
        ("Der Hund ist in der Küche.", "Im Garten ist ein Hund.", NOT),
    ],
    "ja": [
        ("猫は庭にいます。", "庭に猫がいます。", PARA),
        ("犬は台所にいます。", "台所に犬がいます。", PARA),
        ("猫は庭にいます。", "庭に犬がいます。", NOT),
        ("犬は台所にいます。", "庭に犬がいます。", NOT),
    ],
    "ru": [
        ("Кошка в саду.", "Кошка находится в саду.", PARA),
        ("Собака на кухне.", "Собака находится на кухне.", PARA),
        ("Кошка в саду.", "Собака находится в саду.", NOT),
        ("Собака на кухне.", "Собака находится в саду.", NOT),
    ],
}
DETECTED = ("El gato está en el jardín.", "Hay un gato en el jardín.", PARA)


def inputs() -> list[dict[str, str]]:
    rows = [
        {"id": f"{lang}-{i}", "text": t, "text_pair": p, "label": label, "lang": lang}
        for lang, pairs in PAIRS.items()
        for i, (t, p, label) in enumerate(pairs)
    ]
    text, text_pair, label = DETECTED
    return [*rows, {"id": "es-0", "text": text, "text_pair": text_pair, "label": label}]


def probe_body(**changes: Any) -> dict[str, Any]:
    return {
        "inputs": inputs(),
        "perturbations": [
            {"family": "char_swap", "severity": 0.2, "samples": 2},
            {"family": "keyboard_typo", "severity": 0.1},
            {"family": "pair_word_order", "severity": 0.5},
        ],
        "seed": 13,
        **changes,
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, demo_bundle: Path) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("probe-repo")
    copy_bundle(demo_bundle, repo, "demo", "1")
    copy_bundle(demo_bundle, repo, "twin", "1")
    env = {
        "POLYPROBE_MAX_PROBE_EVALUATIONS": str(MAX_EVALUATIONS),
        "POLYPROBE_PROBE_BOOTSTRAP_RESAMPLES": "500",
    }
    with serve(repo, env) as running:
        yield running


@pytest.fixture
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with server.client() as http:
        yield http


@pytest.fixture(scope="module")
def report(server: RunningServer) -> dict[str, Any]:
    with server.client() as http:
        response = http.post(PROBE, json=probe_body())
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def within(interval: dict[str, Any]) -> bool:
    return bool(interval["ci_low"] <= interval["estimate"] <= interval["ci_high"])


def test_a_probe_reports_every_language_with_intervals(report: dict[str, Any]) -> None:
    cells = {(c["family"], c["group"]): c for c in report["invariance"]["by_language"]}
    assert set(cells) == {("char_swap", lang) for lang in ("de", "en", "es", "ja", "ru")} | {
        ("keyboard_typo", lang) for lang in ("de", "en", "es", "ru")
    }
    for cell in cells.values():
        assert cell["n_inputs"] + cell["n_noop"] > 0
        if cell["n_inputs"]:  # 0 when every sample was a no-op for the tokenizer
            assert within(cell["clean_accuracy"]) and cell["clean_accuracy"]["method"] == "wilson"
            assert within(cell["flip_rate"]) and within(cell["accuracy_change"])
            assert within(cell["confidence_drop"]) and within(cell["margin_drop"])
        assert cell["drop_reference"] == "gold"
        if cell["mcnemar"]["p_value"] is not None:
            assert cell["mcnemar"]["p_holm"] >= cell["mcnemar"]["p_value"]
        assert sum(cell["clean_predictions"]["counts"].values()) == cell["n_inputs"]
        assert len(cell["flipped_examples"]) <= 5
    assert cells[("char_swap", "de")]["flip_rate"]["method"].startswith("cluster bootstrap")
    assert cells[("keyboard_typo", "de")]["flip_rate"]["method"] == "wilson"
    scripts = {c["group"] for c in report["invariance"]["by_script"]}
    assert scripts == {"Latin", "Cyrillic", "Hiragana"}


def test_the_report_separates_directional_tests_and_lists_skips(report: dict[str, Any]) -> None:
    kinds = [(p["family"], p["kind"]) for p in report["perturbations"]]
    assert kinds == [
        ("char_swap", "invariance"),
        ("keyboard_typo", "invariance"),
        ("pair_word_order", "directional"),
    ]
    directional = {c["group"]: c for c in report["directional"]["by_language"]}
    assert set(directional) == {"de", "en", "es", "ru"}  # kana word order is refused
    assert set(directional["de"]["change_rate_by_reference"]) <= {PARA, NOT}
    skipped = {(s["family"], s["lang"]): s["n_inputs"] for s in report["skipped"]}
    assert skipped == {("keyboard_typo", "ja"): 4, ("pair_word_order", "ja"): 4}


def test_the_report_echoes_model_seed_and_spec_versions(
    report: dict[str, Any], client: httpx.Client
) -> None:
    manifest = client.get("/v1/models/demo").json()["manifest"]
    served = next(m for m in manifest["models"] if m["precision"] == report["model"]["precision"])
    assert report["model"]["sha256"] == served["sha256"]
    assert (report["model"]["name"], report["model"]["version"]) == ("demo", "1")
    assert (report["seed"], report["rng_scheme"]) == (13, "polyprobe-robustness/1")
    assert report["perturbations"][0]["spec_version"].startswith("char_swap@")
    languages = {g["group"]: g for g in report["languages"]}
    assert languages["es"]["n_lang_detected"] == 1  # detected, not given
    assert languages["de"]["n_lang_detected"] == 0
    assert report["language_detection"]["n_detected"] == 1
    assert any("detected" in w for w in report["warnings"])
    assert report["evaluations"]["clean"] == 17


def test_the_same_seed_gives_a_byte_identical_body_except_timing(client: httpx.Client) -> None:
    body = probe_body(perturbations=[{"family": "char_swap", "severity": 0.2, "samples": 2}])
    first, second = (client.post(PROBE, json=body) for _ in range(2))
    other = client.post(PROBE, json={**body, "seed": 14})

    def without_timing(response: httpx.Response) -> bytes:
        assert response.status_code == 200, response.text
        return re.sub(rb'"timing":\{[^}]*\}', b"", response.content)

    assert without_timing(first) == without_timing(second)
    assert without_timing(first) != without_timing(other)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"perturbations": [{"family": "typo", "severity": 0.1}]}, "unknown perturbation family 'typo'; use one of: "),
        ({"perturbations": [{"family": "char_swap", "severity": 1.5}]}, "perturbations[0].severity: severity for family 'char_swap' must be a number in [0, 1]"),
        ({"perturbations": [{"family": "char_swap", "severity": 0.1, "samples": 0}]}, "perturbations.0.samples: Input should be greater than or equal to 1"),
        ({"inputs": [{"text": "a", "text_pair": "b", "label": "maybe"}]}, "inputs[0].label 'maybe' is not a label of model demo; its labels are: not_paraphrase, paraphrase"),
        ({"inputs": [{"text": "a", "lang": "german!"}]}, "inputs.0.lang: String should match pattern"),
        ({"on_unsupported": "error", "perturbations": [{"family": "keyboard_typo", "severity": 0.1}]}, "perturbations[0] cannot handle inputs[8] (lang ja"),
    ],
)  # fmt: skip
def test_bad_requests_get_422_with_the_reason(
    client: httpx.Client, change: dict[str, Any], message: str
) -> None:
    response = client.post(PROBE, json=probe_body(**change))
    assert response.status_code == 422, response.text
    assert message in response.json()["error"]["message"]


def test_an_unknown_family_lists_the_known_ones(client: httpx.Client) -> None:
    response = client.post(
        PROBE, json=probe_body(perturbations=[{"family": "typo", "severity": 0}])
    )
    error = response.json()["error"]
    assert "keyboard_typo" in error["message"] and "char_swap" in error["details"][0]["allowed"]


def test_a_probe_over_budget_gets_413_pointing_to_the_jobs_api(client: httpx.Client) -> None:
    body = probe_body(perturbations=[{"family": "char_swap", "severity": 0.1, "samples": 20}])
    response = client.post(PROBE, json=body)
    assert response.status_code == 413
    message = response.json()["error"]["message"]
    assert "needs 340 perturbed evaluations (17 inputs x 20 samples" in message
    assert f"the limit is {MAX_EVALUATIONS} (POLYPROBE_MAX_PROBE_EVALUATIONS)" in message
    assert "POST /v1/probe/jobs" in message


def test_comparing_two_copies_of_a_model_finds_no_difference(client: httpx.Client) -> None:
    body = {**probe_body(), "model_a": "demo", "model_b": "twin"}
    response = client.post("/v1/probe/compare", json=body)
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["model_a"]["name"], report["model_b"]["name"]) == ("demo", "twin")
    assert report["model_a"]["sha256"] == report["model_b"]["sha256"]
    cells = report["invariance"]["by_language"] + report["invariance"]["by_script"]
    assert cells
    for cell in cells:
        assert cell["a"] == cell["b"]
        if cell["n_inputs"]:
            assert cell["flip_rate_difference"]["estimate"] == 0.0
            assert cell["perturbed_accuracy_difference"]["estimate"] == 0.0
            assert cell["flip_test"]["p_value"] == 1.0
            assert cell["perturbed_accuracy_test"]["p_value"] == 1.0
    for group in report["languages"]:
        assert group["clean_accuracy_test"]["p_value"] == 1.0
    assert report["evaluations"]["a"] == report["evaluations"]["b"]


def test_compare_refuses_unknown_models_and_counts_both_in_the_budget(
    client: httpx.Client,
) -> None:
    missing = client.post(
        "/v1/probe/compare", json={**probe_body(), "model_a": "demo", "model_b": "x"}
    )
    assert missing.status_code == 404
    heavy = probe_body(perturbations=[{"family": "char_swap", "severity": 0.1, "samples": 10}])
    over = client.post("/v1/probe/compare", json={**heavy, "model_a": "demo", "model_b": "twin"})
    assert over.status_code == 413
    assert "x 2 models" in over.json()["error"]["message"]


def metric_samples(client: httpx.Client, name: str) -> list[tuple[dict[str, str], float]]:
    text = client.get("/metrics").text
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def test_probe_metrics_appear_in_prometheus_format(client: httpx.Client) -> None:
    response = client.post(PROBE, json=probe_body())
    assert response.status_code == 200
    cells = {(c["family"], c["group"]): c for c in response.json()["invariance"]["by_language"]}
    gauges = {
        (labels["family"], labels["lang"]): value
        for labels, value in metric_samples(client, "polyprobe_probe_flip_rate")
        if labels["model"] == "demo" and labels["severity"] == "0.2"
    }
    expected = cells[("char_swap", "de")]["flip_rate"]["estimate"]
    assert gauges[("char_swap", "de")] == pytest.approx(expected)
    deltas = metric_samples(client, "polyprobe_probe_accuracy_delta")
    assert any(labels["model"] == "demo" and labels["lang"] == "ru" for labels, _ in deltas)
    evaluations = dict(
        (labels["model"], value)
        for labels, value in metric_samples(client, "polyprobe_probe_evaluations_total")
    )
    assert evaluations["demo"] >= response.json()["evaluations"]["perturbed"]
    durations = metric_samples(client, "polyprobe_probe_duration_seconds_count")
    assert any(labels["endpoint"] == "probe" and value >= 1 for labels, value in durations)


def test_a_job_gives_the_same_result_as_the_request(
    client: httpx.Client, report: dict[str, Any]
) -> None:
    submitted = client.post("/v1/probe/jobs", json={**probe_body(), "model": "demo"})
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()
    assert submitted.headers["location"] == f"/v1/probe/jobs/{job['id']}"
    assert (job["kind"], job["models"]) == ("probe", ["demo"])
    deadline = time.monotonic() + 120
    while job["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
        job = client.get(f"/v1/probe/jobs/{job['id']}").json()
    assert job["status"] == "succeeded", job
    assert job["partial"] is False
    assert job["progress"]["evaluations_done"] == job["progress"]["evaluations_total"]
    assert job["progress"]["perturbations_done"] == 3
    result = job["result"]
    assert {**result, "timing": None} == {**report, "timing": None}
    # Cancelling a finished job changes nothing.
    assert client.delete(f"/v1/probe/jobs/{job['id']}").json()["status"] == "succeeded"


def test_job_requests_are_checked_at_submission(client: httpx.Client) -> None:
    neither = client.post("/v1/probe/jobs", json=probe_body())
    assert neither.status_code == 422
    assert '"model_a" and "model_b"' in neither.json()["error"]["message"]
    bad = client.post("/v1/probe/jobs", json={**probe_body(), "model": "demo", "seed": -1})
    assert bad.status_code == 422
    assert client.get("/v1/probe/jobs/nope").status_code == 404
    assert client.delete("/v1/probe/jobs/nope").json()["error"]["type"] == "job_not_found"
