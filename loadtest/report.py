"""Latency percentiles, throughput, errors and server-side histogram deltas of a load run."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from loadtest.runner import RequestRecord

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


@dataclass(frozen=True)
class HistogramDelta:
    """What one server histogram recorded during the run (after minus before)."""

    count: float
    sum: float
    buckets: list[tuple[float, float]]  # (upper bound, cumulative count), ascending, +Inf last

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None

    def quantile(self, q: float) -> float | None:
        return histogram_quantile(q, self.buckets)


@dataclass(frozen=True)
class RunSummary:
    offered: str
    duration_s: float
    requests: int
    inputs: int
    throughput_rps: float
    throughput_inputs_per_s: float
    latency_ms: dict[str, float | None]
    statuses: dict[str, int]
    errors: dict[str, int]
    server: dict[str, dict[str, float | None]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus' estimate: linear interpolation inside the bucket that holds the q-th rank."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for upper_bound, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(upper_bound):
                return lower_bound  # as Prometheus does: the highest finite bound
            in_bucket = cumulative - lower_count
            if in_bucket <= 0:
                return upper_bound
            return lower_bound + (upper_bound - lower_bound) * (rank - lower_count) / in_bucket
        lower_bound, lower_count = upper_bound, cumulative
    return lower_bound


def parse_histograms(exposition: str, **labels: str) -> dict[str, HistogramDelta]:
    """Every histogram in a /metrics text, its series summed over those matching `labels`."""
    result: dict[str, HistogramDelta] = {}
    for family in text_string_to_metric_families(exposition):
        if family.type != "histogram":
            continue
        count = total = 0.0
        buckets: dict[float, float] = {}
        for sample in family.samples:
            if any(sample.labels.get(k) != v for k, v in labels.items()):
                continue
            if sample.name.endswith("_bucket"):
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
            elif sample.name.endswith("_count"):
                count += sample.value
            elif sample.name.endswith("_sum"):
                total += sample.value
        result[family.name] = HistogramDelta(count, total, sorted(buckets.items()))
    return result


def histogram_deltas(
    before: dict[str, HistogramDelta], after: dict[str, HistogramDelta]
) -> dict[str, HistogramDelta]:
    deltas: dict[str, HistogramDelta] = {}
    for name, late in after.items():
        early = before.get(name, HistogramDelta(0.0, 0.0, []))
        early_buckets = dict(early.buckets)
        deltas[name] = HistogramDelta(
            late.count - early.count,
            late.sum - early.sum,
            [(bound, value - early_buckets.get(bound, 0.0)) for bound, value in late.buckets],
        )
    return deltas


def summarise(
    records: Sequence[RequestRecord],
    offered: str,
    duration_s: float,
    server: dict[str, HistogramDelta] | None = None,
) -> RunSummary:
    ok = [r for r in records if r.status == 200]
    latencies = np.array([r.latency_s for r in ok]) * 1000.0
    percentiles: dict[str, float | None] = {
        f"p{p:g}": (float(np.percentile(latencies, p)) if latencies.size else None)
        for p in PERCENTILES
    }
    percentiles["max"] = float(latencies.max()) if latencies.size else None
    percentiles["mean"] = float(latencies.mean()) if latencies.size else None
    statuses = Counter(str(r.status) for r in records)
    errors = Counter(r.error for r in records if r.error)
    elapsed = max(duration_s, max((r.start_s + r.latency_s for r in records), default=0.0))
    server_view = {
        name: {
            "count": delta.count,
            "mean_ms": None if delta.mean is None else delta.mean * 1000,
            "p50_ms": _ms(delta.quantile(0.5)),
            "p99_ms": _ms(delta.quantile(0.99)),
        }
        for name, delta in (server or {}).items()
        if name.endswith("_seconds") and delta.count > 0
    }
    return RunSummary(
        offered=offered,
        duration_s=elapsed,
        requests=len(records),
        inputs=sum(r.inputs for r in ok),
        throughput_rps=len(ok) / elapsed if elapsed else 0.0,
        throughput_inputs_per_s=sum(r.inputs for r in ok) / elapsed if elapsed else 0.0,
        latency_ms=percentiles,
        statuses=dict(statuses),
        errors=dict(errors),
        server=server_view,
    )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def markdown_table(summaries: Sequence[RunSummary]) -> str:
    lines = [
        "| offered | requests | req/s | inputs/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | statuses |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        lat = s.latency_ms
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(s.statuses.items()))
        lines.append(
            f"| {s.offered} | {s.requests} | {s.throughput_rps:.1f} | {s.throughput_inputs_per_s:.1f} "
            f"| {_fmt(lat['p50'])} | {_fmt(lat['p90'])} | {_fmt(lat['p99'])} | {_fmt(lat['p99.9'])} "
            f"| {_fmt(lat['max'])} | {statuses} |"
        )
    server_rows = [
        f"| {s.offered} | {name} | {int(v['count'] or 0)} | {_fmt(v['mean_ms'])} | {_fmt(v['p50_ms'])} | {_fmt(v['p99_ms'])} |"
        for s in summaries
        for name, v in sorted(s.server.items())
    ]
    if server_rows:
        lines += [
            "",
            "Server-side histograms over the run (from /metrics deltas; quantiles interpolated in buckets):",
            "",
            "| offered | histogram | count | mean ms | p50 ms | p99 ms |",
            "|---|---|---|---|---|---|",
            *server_rows,
        ]
    return "\n".join(lines) + "\n"


def plot_latency_vs_load(summaries: Sequence[RunSummary], path: Path) -> Path:
    """Latency percentiles against achieved throughput: where the curve bends is the capacity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    throughput = [s.throughput_rps for s in summaries]
    for key in ("p50", "p90", "p99"):
        values = [s.latency_ms[key] for s in summaries]
        axis.plot(throughput, [math.nan if v is None else v for v in values], marker="o", label=key)
    axis.set_xlabel("achieved throughput (requests/s)")
    axis.set_ylabel("latency (ms)")
    axis.set_yscale("log")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    axis.set_title("polyprobe latency against load")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
