"""Load generator pieces with exact expectations (the live run is in tests/integration)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from loadtest.payloads import InputsMix, PayloadFactory, read_pairs
from loadtest.report import (
    HistogramDelta,
    RunSummary,
    SloCrossing,
    histogram_deltas,
    histogram_quantile,
    markdown_table,
    offered_load_at_slo,
    parse_histograms,
    server_view,
    summarise,
    throughput_at_slo,
)
from loadtest.runner import (
    LoadShape,
    RequestRecord,
    RunResult,
    poisson_arrivals,
    require_loopback,
)


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


def test_bad_jsonl_names_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"sentence1": "a", "sentence2": "b"}) + "\n{oops\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2 is not JSON"):
        read_pairs([bad])


def test_summary_counts_only_successes_in_latency_and_throughput() -> None:
    records = [RequestRecord(i * 0.1, 0.010 * (i + 1), 200, 2) for i in range(10)]
    records += [RequestRecord(1.0, 0.001, 429, 2), RequestRecord(1.0, 5.0, 0, 1, "ReadTimeout")]
    shape = LoadShape("open", 10.0, rate=10.0)
    summary = summarise(RunResult(records, elapsed_s=6.0), shape)
    assert summary.offered == "10 req/s open-loop"
    assert (summary.mode, summary.offered_load) == ("open", 10.0)
    assert summary.requests == 12
    assert summary.statuses == {"200": 10, "429": 1, "0": 1}
    assert summary.errors == {"ReadTimeout": 1}
    assert summary.inputs == 20
    # Throughput is over the run's own wall time, not the duration bound it was given.
    assert summary.throughput_rps == pytest.approx(10 / 6)
    assert summary.throughput_inputs_per_s == pytest.approx(20 / 6)
    assert summary.latency_ms["max"] == pytest.approx(100.0)
    assert summary.latency_ms["p50"] == pytest.approx(55.0)
    assert summary.latency_ms["p90"] == pytest.approx(91.0)
    assert not summary.all_ok


def test_server_view_reports_seconds_in_ms_and_counts_as_they_are() -> None:
    view = server_view(
        {
            "x_seconds": HistogramDelta(4.0, 0.2, [(0.05, 2.0), (0.1, 4.0), (float("inf"), 4.0)]),
            "x_batch_size": HistogramDelta(
                2.0, 10.0, [(4.0, 1.0), (8.0, 2.0), (float("inf"), 2.0)]
            ),
            "idle_seconds": HistogramDelta(0.0, 0.0, []),
        }
    )
    assert set(view) == {"x_seconds", "x_batch_size"}
    assert view["x_seconds"] == {"count": 4.0, "sum": 200.0, "mean": 50.0, "p50": 50.0, "p99": 99.0}
    assert view["x_batch_size"]["mean"] == 5.0
    assert view["x_batch_size"]["p50"] == 4.0


def _run(load: float, rps: float, p99: float | None, statuses: dict[str, int]) -> RunSummary:
    latency: dict[str, float | None] = {k: p99 for k in ("p50", "p90", "p99", "p99.9", "max")}
    return RunSummary(
        offered=f"{load:g} req/s open-loop",
        mode="open",
        offered_load=load,
        duration_s=1.0,
        requests=sum(statuses.values()),
        inputs=0,
        throughput_rps=rps,
        throughput_inputs_per_s=rps,
        latency_ms=latency,
        statuses=statuses,
        errors={},
    )


def test_throughput_at_slo_takes_the_best_run_that_met_it_without_errors() -> None:
    runs = [
        _run(10, 9.8, 40.0, {"200": 100}),
        _run(20, 19.5, 90.0, {"200": 200}),
        _run(40, 30.0, 180.0, {"200": 390, "429": 10}),  # fast enough, but shed load
        _run(80, 31.0, 900.0, {"200": 800}),  # answered everything, too late
    ]
    best = throughput_at_slo(runs, p99_ms=250.0)
    assert best is runs[1]
    assert throughput_at_slo(runs, p99_ms=10.0) is None
    table = markdown_table(runs, slo_p99_ms=250.0)
    assert "Throughput at p99 <= 250 ms (all requests 200): 19.5 req/s" in table
    # 20 req/s passed at 90 ms, 40 failed (429s) at 180 ms: the crossing is the last passing rate.
    assert "p99 crosses 250 ms at about 20.0 req/s offered" in table
    assert "more than 80 req/s offered" in markdown_table(runs[:2] + runs[3:], slo_p99_ms=1000.0)
    assert "no run met it" in markdown_table(runs, slo_p99_ms=10.0)


def test_poisson_arrivals_are_seeded_and_bounded() -> None:
    by_count = poisson_arrivals(50.0, 0.0, 200, random.Random(1))
    assert len(by_count) == 200
    assert by_count == sorted(by_count)
    assert by_count == poisson_arrivals(50.0, 0.0, 200, random.Random(1))
    assert by_count != poisson_arrivals(50.0, 0.0, 200, random.Random(2))
    by_duration = poisson_arrivals(50.0, 2.0, None, random.Random(1))
    assert by_duration == [t for t in by_count if t <= 2.0]
    assert by_duration[-1] <= 2.0
    assert poisson_arrivals(50.0, 2.0, 5, random.Random(1)) == by_count[:5]


def test_poisson_arrivals_have_the_asked_rate_and_exponential_gaps() -> None:
    arrivals = poisson_arrivals(200.0, 0.0, 20_000, random.Random(0))
    gaps = [b - a for a, b in zip([0.0, *arrivals], arrivals, strict=False)]
    mean = sum(gaps) / len(gaps)
    assert mean == pytest.approx(1 / 200.0, rel=0.03)
    # Exponential: the standard deviation equals the mean; regular ticks would give 0.
    std = (sum((g - mean) ** 2 for g in gaps) / len(gaps)) ** 0.5
    assert std == pytest.approx(mean, rel=0.05)


def test_shapes_and_targets_are_checked() -> None:
    with pytest.raises(ValueError, match="rate > 0"):
        LoadShape("open", 10)
    with pytest.raises(ValueError, match="concurrency >= 1"):
        LoadShape("closed", 10)
    with pytest.raises(ValueError, match="duration or a request count"):
        LoadShape("open", 0, rate=1)
    with pytest.raises(ValueError, match="request bound"):
        LoadShape("open", 1, rate=1, max_requests=0)
    with pytest.raises(ValueError, match="duration must be >= 0"):
        LoadShape("open", -1, rate=1)
    assert LoadShape("closed", 0, concurrency=3, max_requests=9).offered_load == 3.0
    for url in (
        "http://127.0.0.1:8000",
        "http://127.3.0.1",
        "http://localhost:1",
        "http://[::1]:80",
    ):
        require_loopback(url, allow_remote=False)
    with pytest.raises(ValueError, match="--allow-remote"):
        require_loopback("http://10.0.0.5:8000", allow_remote=False)
    with pytest.raises(ValueError, match="--allow-remote"):
        require_loopback("http://127.0.0.1.example.com", allow_remote=False)
    with pytest.raises(ValueError, match="not an http"):
        require_loopback("127.0.0.1:8000", allow_remote=False)
    require_loopback("http://10.0.0.5:8000", allow_remote=True)


def test_the_slo_crossing_is_interpolated_on_log_log_axes_between_pass_and_fail() -> None:
    runs = [
        _run(40, 30.0, 500.0, {"200": 400}),
        _run(10, 9.8, 100.0, {"200": 100}),
        _run(20, 19.5, 200.0, {"200": 200}),
    ]
    # From 20 to 40 req/s p99 goes 200 -> 500 ms: 250 ms is log(1.25)/log(2.5) of the way.
    crossing = offered_load_at_slo(runs, p99_ms=250.0)
    assert crossing is not None and crossing.bracketed
    assert crossing.offered_load == pytest.approx(20 * 2 ** (math.log(1.25) / math.log(2.5)))
    assert offered_load_at_slo(runs, p99_ms=50.0) is None
    above_all = offered_load_at_slo(runs, p99_ms=1000.0)
    assert above_all == SloCrossing(40, bracketed=False)


def test_a_step_that_failed_on_errors_alone_ends_the_crossing_at_the_last_pass() -> None:
    runs = [_run(10, 9.8, 100.0, {"200": 100}), _run(20, 15.0, 120.0, {"200": 150, "429": 50})]
    assert offered_load_at_slo(runs, p99_ms=250.0) == SloCrossing(10, bracketed=True)
