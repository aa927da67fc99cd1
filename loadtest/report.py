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

from loadtest.runner import LoadShape, RunResult

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
    mode: str
    offered_load: float  # requests/s (open loop) or clients (closed loop)
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

    @property
    def all_ok(self) -> bool:
        return bool(self.requests) and self.statuses == {"200": self.requests}


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
    result: RunResult, shape: LoadShape, server: dict[str, HistogramDelta] | None = None
) -> RunSummary:
    """Latency over successful requests only; throughput over the run's wall time."""
    records = result.records
    ok = [r for r in records if r.status == 200]
    latencies = np.array([r.latency_s for r in ok]) * 1000.0
    percentiles: dict[str, float | None] = {
        f"p{p:g}": (float(np.percentile(latencies, p)) if latencies.size else None)
        for p in PERCENTILES
    }
    percentiles["max"] = float(latencies.max()) if latencies.size else None
    percentiles["mean"] = float(latencies.mean()) if latencies.size else None
    elapsed = result.elapsed_s
    ok_inputs = sum(r.inputs for r in ok)
    return RunSummary(
        offered=shape.describe(),
        mode=shape.mode,
        offered_load=shape.offered_load,
        duration_s=elapsed,
        requests=len(records),
        inputs=ok_inputs,
        throughput_rps=len(ok) / elapsed if elapsed > 0 else 0.0,
        throughput_inputs_per_s=ok_inputs / elapsed if elapsed > 0 else 0.0,
        latency_ms=percentiles,
        statuses=dict(Counter(str(r.status) for r in records)),
        errors=dict(Counter(r.error for r in records if r.error)),
        server=server_view(server or {}),
    )


def server_view(deltas: dict[str, HistogramDelta]) -> dict[str, dict[str, float | None]]:
    """Count, sum, mean and interpolated p50/p99 per histogram that saw the run; seconds as ms."""
    view: dict[str, dict[str, float | None]] = {}
    for name, delta in deltas.items():
        if delta.count <= 0:
            continue
        scale = 1000.0 if name.endswith("_seconds") else 1.0
        view[name] = {
            "count": delta.count,
            "sum": delta.sum * scale,
            "mean": None if delta.mean is None else delta.mean * scale,
            "p50": _scaled(delta.quantile(0.5), scale),
            "p99": _scaled(delta.quantile(0.99), scale),
        }
    return view


def throughput_at_slo(summaries: Sequence[RunSummary], p99_ms: float) -> RunSummary | None:
    """The run with the highest throughput whose p99 met the SLO with every request answered 200."""
    passing = [s for s in summaries if meets_slo(s, p99_ms)]
    return max(passing, key=lambda s: s.throughput_rps, default=None)


@dataclass(frozen=True)
class SloCrossing:
    """Where p99 latency crosses an SLO, read off a sweep of offered loads."""

    offered_load: float
    bracketed: bool  # False: every run met the SLO, so the crossing lies above the highest load


def offered_load_at_slo(summaries: Sequence[RunSummary], p99_ms: float) -> SloCrossing | None:
    """The offered load at which p99 first crosses the SLO, interpolated on log-log axes.

    A geometric sweep only brackets the crossing within one step (a factor of 1.6 by default),
    so comparing peers by their best passing step alone can make a small gap look like a whole
    step. Latency grows roughly as a power of load near saturation, hence log-log."""
    runs = sorted(summaries, key=lambda s: s.offered_load)
    met = [meets_slo(s, p99_ms) for s in runs]
    if not met or not met[0]:
        return None
    for below, above, above_met in zip(runs, runs[1:], met[1:], strict=False):
        if above_met:
            continue
        low_p99, high_p99 = below.latency_ms["p99"], above.latency_ms["p99"]
        if high_p99 is None or low_p99 is None or high_p99 <= p99_ms:
            return SloCrossing(below.offered_load, bracketed=True)  # failed on errors, not time
        fraction = math.log(p99_ms / low_p99) / math.log(high_p99 / low_p99)
        load = math.exp(
            math.log(below.offered_load)
            + fraction * (math.log(above.offered_load) - math.log(below.offered_load))
        )
        return SloCrossing(load, bracketed=True)
    return SloCrossing(runs[-1].offered_load, bracketed=False)


def meets_slo(summary: RunSummary, p99_ms: float) -> bool:
    """Every request answered 200 and p99 within the SLO."""
    p99 = summary.latency_ms["p99"]
    return summary.all_ok and p99 is not None and p99 <= p99_ms


def _scaled(value: float | None, scale: float) -> float | None:
    return None if value is None else value * scale


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def markdown_table(summaries: Sequence[RunSummary], slo_p99_ms: float | None = None) -> str:
    lines = [
        "| offered | requests | req/s | inputs/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | statuses |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        lat = s.latency_ms
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(s.statuses.items()))
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(s.errors.items()))
        lines.append(
            f"| {s.offered} | {s.requests} | {s.throughput_rps:.1f} | {s.throughput_inputs_per_s:.1f} "
            f"| {_fmt(lat['p50'])} | {_fmt(lat['p90'])} | {_fmt(lat['p99'])} | {_fmt(lat['p99.9'])} "
            f"| {_fmt(lat['max'])} | {statuses}{f' ({errors})' if errors else ''} |"
        )
    if slo_p99_ms is not None:
        best = throughput_at_slo(summaries, slo_p99_ms)
        lines += [
            "",
            f"Throughput at p99 <= {slo_p99_ms:g} ms (all requests 200): "
            + (
                f"{best.throughput_rps:.1f} req/s, {best.throughput_inputs_per_s:.1f} inputs/s "
                f"(at {best.offered})"
                if best
                else "no run met it"
            ),
        ]
        crossing = offered_load_at_slo(summaries, slo_p99_ms)
        if crossing and all(s.mode == "open" for s in summaries):
            lines.append(
                f"p99 crosses {slo_p99_ms:g} ms at "
                + (
                    f"about {crossing.offered_load:.1f} req/s offered (log-log interpolated "
                    "between the last passing and the first failing rate)"
                    if crossing.bracketed
                    else f"more than {crossing.offered_load:g} req/s offered (every rate met it)"
                )
            )
    server_rows = [
        f"| {s.offered} | {name} | {int(v['count'] or 0)} | {_fmt(v['mean'])} | {_fmt(v['p50'])} "
        f"| {_fmt(v['p99'])} |"
        for s in summaries
        for name, v in sorted(s.server.items())
    ]
    if server_rows:
        lines += [
            "",
            "Server-side histograms over each run (/metrics after minus before; `_seconds` shown "
            "in ms; quantiles interpolated inside buckets as Prometheus does):",
            "",
            "| offered | histogram | count | mean | p50 | p99 |",
            "|---|---|---|---|---|---|",
            *server_rows,
        ]
    return "\n".join(lines) + "\n"


_LOAD_AXIS = {
    frozenset({"open"}): "offered load (requests/s, Poisson arrivals)",
    frozenset({"closed"}): "offered load (concurrent clients)",
}


def plot_latency_vs_load(
    summaries: Sequence[RunSummary], path: Path, title: str, slo_p99_ms: float | None = None
) -> Path:
    """Latency percentiles against offered load: where the curves bend is the capacity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = sorted(summaries, key=lambda s: s.offered_load)
    figure, axis = plt.subplots(figsize=(7, 4.5))
    load = [s.offered_load for s in ordered]
    for key in ("p50", "p90", "p99", "p99.9"):
        values = [s.latency_ms[key] for s in ordered]
        axis.plot(load, [math.nan if v is None else v for v in values], marker="o", label=key)
    if slo_p99_ms is not None:
        axis.axhline(slo_p99_ms, color="grey", linestyle="--", label=f"SLO {slo_p99_ms:g} ms")
    axis.set_xlabel(_LOAD_AXIS.get(frozenset(s.mode for s in ordered), "offered load"))
    axis.set_ylabel("latency (ms)")
    axis.set_yscale("log")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
