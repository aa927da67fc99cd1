"""Load generator pieces with exact expectations (the live run is in tests/integration)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtest.payloads import InputsMix, PayloadFactory, read_pairs
from loadtest.report import (
    HistogramDelta,
    histogram_deltas,
    histogram_quantile,
    parse_histograms,
    summarise,
)
from loadtest.runner import LoadShape, RequestRecord, require_loopback


def test_mix_parses_sizes_and_weights() -> None:
    mix = InputsMix.parse("1:0.5, 4:0.25,16:0.25")
    assert mix.sizes == (1, 4, 16)
    assert mix.mean == pytest.approx(0.5 + 1 + 4)
    assert InputsMix.parse("8").sizes == (8,)


@pytest.mark.parametrize("spec", ["", "a:1", "0:1", "4:-1"])
def test_bad_mix_says_how_to_write_one(spec: str) -> None:
    with pytest.raises(ValueError, match="bad inputs mix"):
        InputsMix.parse(spec)


def test_pairs_are_read_from_each_known_schema(tmp_path: Path) -> None:
    paws = tmp_path / "paws.jsonl"
    paws.write_text(json.dumps({"id": 1, "sentence1": "a", "sentence2": "b", "label": 1}) + "\n\n")
    xnli = tmp_path / "xnli.jsonl"
    xnli.write_text(json.dumps({"premise": "p", "hypothesis": "h"}) + "\n")
    assert read_pairs([paws, xnli]) == [
        {"text": "a", "text_pair": "b"},
        {"text": "p", "text_pair": "h"},
    ]
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"question": "q"}) + "\n")
    with pytest.raises(ValueError, match="no rows"):
        read_pairs([other])


def test_payloads_are_reproducible_under_a_seed() -> None:
    pairs = [{"text": str(i), "text_pair": str(-i)} for i in range(50)]
    mix = InputsMix.parse("1:1,3:1")
    first = [PayloadFactory(pairs, mix, seed=4).next_body() for _ in range(1)]
    factory_a, factory_b = PayloadFactory(pairs, mix, seed=4), PayloadFactory(pairs, mix, seed=4)
    bodies_a = [factory_a.next_body() for _ in range(20)]
    assert bodies_a == [factory_b.next_body() for _ in range(20)]
    assert bodies_a[0] == first[0]
    assert {len(b["inputs"]) for b in bodies_a} == {1, 3}


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    buckets = [(0.1, 10.0), (0.2, 30.0), (0.4, 40.0), (float("inf"), 40.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(
        0.15
    )  # rank 20: half-way in (0.1, 0.2]
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.1)
    assert histogram_quantile(1.0, buckets) == pytest.approx(0.4)
    assert histogram_quantile(0.5, [(0.1, 0.0), (float("inf"), 0.0)]) is None
    assert histogram_quantile(0.99, [(0.1, 1.0), (float("inf"), 5.0)]) == 0.1


def test_metrics_deltas_isolate_the_run() -> None:
    before = (
        "# TYPE t_seconds histogram\n"
        't_seconds_bucket{le="0.1",model="m"} 2\nt_seconds_bucket{le="+Inf",model="m"} 3\n'
        't_seconds_count{model="m"} 3\nt_seconds_sum{model="m"} 0.5\n'
        't_seconds_bucket{le="0.1",model="x"} 100\nt_seconds_bucket{le="+Inf",model="x"} 100\n'
        't_seconds_count{model="x"} 100\nt_seconds_sum{model="x"} 1\n'
    )
    after = before.replace("} 2\n", "} 6\n", 1).replace(
        'le="+Inf",model="m"} 3', 'le="+Inf",model="m"} 8'
    )
    after = after.replace('t_seconds_count{model="m"} 3', 't_seconds_count{model="m"} 8').replace(
        't_seconds_sum{model="m"} 0.5', 't_seconds_sum{model="m"} 1.5'
    )
    delta = histogram_deltas(
        parse_histograms(before, model="m"), parse_histograms(after, model="m")
    )
    assert delta["t_seconds"] == HistogramDelta(5.0, 1.0, [(0.1, 4.0), (float("inf"), 5.0)])


def test_summary_counts_only_successes_in_latency_and_throughput() -> None:
    records = [RequestRecord(i * 0.1, 0.010 * (i + 1), 200, 2) for i in range(10)]
    records += [RequestRecord(1.0, 0.001, 429, 2), RequestRecord(1.0, 5.0, 0, 1, "ReadTimeout")]
    summary = summarise(records, "10 req/s open-loop", duration_s=10.0)
    assert summary.requests == 12
    assert summary.statuses == {"200": 10, "429": 1, "0": 1}
    assert summary.errors == {"ReadTimeout": 1}
    assert summary.inputs == 20
    assert summary.throughput_rps == pytest.approx(1.0)
    assert summary.latency_ms["max"] == pytest.approx(100.0)
    assert summary.latency_ms["p50"] == pytest.approx(55.0)


def test_shapes_and_targets_are_checked() -> None:
    with pytest.raises(ValueError, match="rate > 0"):
        LoadShape("open", 10)
    with pytest.raises(ValueError, match="concurrency >= 1"):
        LoadShape("closed", 10)
    require_loopback("http://127.0.0.1:8000", allow_remote=False)
    with pytest.raises(ValueError, match="--allow-remote"):
        require_loopback("http://10.0.0.5:8000", allow_remote=False)
