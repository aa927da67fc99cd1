"""`"family": "attack"` against the real server and the demo bundle: minimal flipping edits that
really flip the served model, budgets kept, reproducible, refused with 422/413 when malformed."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import copy_bundle
from tests.integration.server import RunningServer, serve
from tests.integration.test_probe import PROBE, inputs, metric_samples

pytestmark = pytest.mark.integration

BUDGET = 40
ATTACK = {"family": "attack", "severity": 0.5, "query_budget": BUDGET}


def attack_body(*perturbations: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {
        "inputs": inputs(),
        "perturbations": list(perturbations) or [ATTACK],
        "seed": 7,
        **changes,
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, demo_bundle: Path) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("attack-repo")
    copy_bundle(demo_bundle, repo, "demo", "1")
    copy_bundle(demo_bundle, repo, "twin", "1")
    env = {
        "POLYPROBE_MAX_PROBE_EVALUATIONS": "1000",
        "POLYPROBE_PROBE_BOOTSTRAP_RESAMPLES": "300",
    }
    with serve(repo, env) as running:
        yield running


@pytest.fixture
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with server.client() as http:
        yield http


@pytest.fixture(scope="module")
def report(server: RunningServer) -> dict[str, Any]:
    body = attack_body({"family": "char_swap", "severity": 0.2}, ATTACK)
    with server.client() as http:
        response = http.post(PROBE, json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def predict(client: httpx.Client, pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = [{"text": p["text"], "text_pair": p["text_pair"]} for p in pairs]
    response = client.post("/v1/models/demo/predict", json={"inputs": rows})
    assert response.status_code == 200, response.text
    predictions: list[dict[str, Any]] = response.json()["predictions"]
    return predictions


def test_every_flip_the_attack_reports_flips_the_served_model(
    report: dict[str, Any], client: httpx.Client
) -> None:
    (attack,) = report["attacks"]
    assert attack["perturbation"] == 1 and attack["query_budget"] == BUDGET
    results = attack["results"]
    assert [r["input_index"] for r in results] == list(range(17))
    flipped = [r for r in results if r["success"]]
    assert flipped, "the demo model resists every attack: the test proves nothing"
    clean = predict(client, [r["original"] for r in flipped])
    adversarial = predict(client, [r["adversarial"] for r in flipped])
    for result, before, after in zip(flipped, clean, adversarial, strict=True):
        assert result["clean_prediction"]["label"] == before["label"]
        assert result["final_prediction"]["label"] == after["label"] != before["label"]
        assert result["adversarial"] != result["original"]
        assert 1 <= result["words_changed"] == len(result["edits"])
        assert result["original_label_probability"] == pytest.approx(
            after["probabilities"][before["label"]], abs=1e-6
        )
        for edit in result["edits"]:
            sentence = result["original"][edit["field"]]
            assert sentence[edit["start"] :].startswith(edit["original"])
            assert edit["edited"] in result["adversarial"][edit["field"]]
    for result in results:
        assert 1 <= result["queries"] <= BUDGET
        if result["stop"] == "budget":
            assert result["queries"] == BUDGET and not result["success"]


def test_the_attack_reports_rates_with_intervals_per_language(report: dict[str, Any]) -> None:
    (attack,) = report["attacks"]
    results = attack["results"]
    overall = attack["overall"]
    assert overall["n_inputs"] == 17
    successes = sum(r["success"] for r in results)
    assert overall["success_rate"]["estimate"] == pytest.approx(successes / 17)
    assert overall["success_rate"]["method"] == "wilson"
    queries = overall["queries_per_input"]
    assert queries["estimate"] == pytest.approx(sum(r["queries"] for r in results) / 17)
    assert queries["ci_low"] <= queries["estimate"] <= queries["ci_high"]
    assert {g["group"] for g in attack["by_language"]} == {"de", "en", "es", "ja", "ru"}
    assert {g["group"] for g in attack["by_script"]} == {"Latin", "Cyrillic", "Hiragana"}
    assert sum(g["n_inputs"] for g in attack["by_language"]) == 17
    info = report["perturbations"][1]
    assert (info["family"], info["kind"], info["spec_version"]) == ("attack", "attack", "attack@1")
    # The sampled family beside it keeps its own index and cells.
    assert report["perturbations"][0]["kind"] == "invariance"
    assert {c["perturbation"] for c in report["invariance"]["by_language"]} == {0}


def test_an_attack_is_reproducible_from_its_seed(client: httpx.Client) -> None:
    first, second = (client.post(PROBE, json=attack_body()) for _ in range(2))
    assert first.status_code == 200, first.text

    def without_timing(response: httpx.Response) -> bytes:
        return re.sub(rb'"timing":\{[^}]*\}', b"", response.content)

    assert without_timing(first) == without_timing(second)


def test_attack_queries_are_counted_in_the_probe_metric(client: httpx.Client) -> None:
    def total() -> float:
        samples = metric_samples(client, "polyprobe_probe_evaluations_total")
        return sum(value for labels, value in samples if labels["model"] == "demo")

    before = total()
    response = client.post(PROBE, json=attack_body())
    assert response.status_code == 200, response.text
    used = sum(r["queries"] for r in response.json()["attacks"][0]["results"])
    assert total() - before == used


def test_an_attack_job_gives_the_same_attack_as_the_request(
    client: httpx.Client, report: dict[str, Any]
) -> None:
    body = {**attack_body({"family": "char_swap", "severity": 0.2}, ATTACK), "model": "demo"}
    job = client.post("/v1/probe/jobs", json=body).json()
    deadline = time.monotonic() + 180
    while job["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
        job = client.get(f"/v1/probe/jobs/{job['id']}").json()
    assert job["status"] == "succeeded", job
    assert job["progress"]["evaluations_done"] == job["progress"]["evaluations_total"]
    assert job["result"]["attacks"] == report["attacks"]


@pytest.mark.parametrize(
    ("perturbation", "message"),
    [
        ({**ATTACK, "edits": ["typo"]}, "perturbations[0].edits: edits: unknown perturbation family 'typo'"),
        ({**ATTACK, "edits": ["pair_word_order"]}, "family 'pair_word_order' cannot be an attack edit"),
        ({**ATTACK, "severity": 2}, "perturbations[0].severity: severity for family 'attack' must be a number in [0, 1]"),
        ({**ATTACK, "query_budget": 1}, "perturbations.0.query_budget: Input should be greater than or equal to 2"),
        ({"family": "char_swap", "severity": 0.1, "query_budget": 10}, 'query_budget and edits are options of family "attack"'),
        ({**ATTACK, "edits": []}, "perturbations.0.edits: List should have at least 1 item"),
    ],
)  # fmt: skip
def test_bad_attack_specs_get_422_with_the_reason(
    client: httpx.Client, perturbation: dict[str, Any], message: str
) -> None:
    response = client.post(PROBE, json=attack_body(perturbation))
    assert response.status_code == 422, response.text
    assert message in response.json()["error"]["message"]


def test_attacks_are_refused_in_comparisons(client: httpx.Client) -> None:
    body = {**attack_body(), "model_a": "demo", "model_b": "twin"}
    for path, extra in (("/v1/probe/compare", {}), ("/v1/probe/jobs", {})):
        response = client.post(path, json={**body, **extra})
        assert response.status_code == 422, response.text
        assert (
            "a comparison cannot give both models the same inputs"
            in (response.json()["error"]["message"])
        )


def test_an_attack_over_the_budget_gets_413(client: httpx.Client) -> None:
    response = client.post(PROBE, json=attack_body({**ATTACK, "query_budget": 100}))
    assert response.status_code == 413
    message = response.json()["error"]["message"]
    assert (
        "needs 1700 perturbed evaluations (17 inputs x (0 samples over all perturbations + 100 attack queries))"
        in message
    )
