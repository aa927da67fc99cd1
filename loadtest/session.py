"""One measured run (or a sweep of them) against a live server, and the files it leaves behind."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import httpx

from loadtest.payloads import PayloadFactory
from loadtest.report import (
    HistogramDelta,
    RunSummary,
    histogram_deltas,
    markdown_table,
    parse_histograms,
    plot_latency_vs_load,
    summarise,
)
from loadtest.runner import BodyEncoder, LoadShape, run_load

PREDICT_ROUTE = "/v1/models/{model}/predict"


def predict_path(model: str) -> str:
    return PREDICT_ROUTE.format(model=model)


def scrape_histograms(base_url: str, model: str) -> dict[str, HistogramDelta]:
    """The predict route's request histogram and the model's own stage histograms.

    A server without a Prometheus /metrics (a peer in bench/) gives an empty view, not an error.
    """
    try:
        response = httpx.get(f"{base_url}/metrics", timeout=10)
    except httpx.HTTPError:
        return {}
    if response.status_code != 200 or "text/plain" not in response.headers.get("content-type", ""):
        return {}
    text = response.text
    request = parse_histograms(text, route=PREDICT_ROUTE)
    stages = {
        name: h
        for name, h in parse_histograms(text, model=model).items()
        if name != "polyprobe_request_duration_seconds"
    }
    if "polyprobe_request_duration_seconds" in request:
        stages["polyprobe_request_duration_seconds"] = request["polyprobe_request_duration_seconds"]
    return stages


def warm_up(base_url: str, path: str, payloads: PayloadFactory, requests: int) -> None:
    """Sequential requests before measuring: first calls pay for lazy initialisation."""
    with httpx.Client(base_url=base_url, timeout=120) as client:
        for _ in range(requests):
            client.post(path, json=payloads.next_body()).raise_for_status()


def measure(
    base_url: str,
    model: str,
    shape: LoadShape,
    payloads: PayloadFactory,
    seed: int = 0,
    *,
    path: str | None = None,
    encode: BodyEncoder | None = None,
) -> RunSummary:
    """One run, with the server's histogram deltas over exactly that run."""
    before = scrape_histograms(base_url, model)
    result = asyncio.run(
        run_load(base_url, path or predict_path(model), shape, payloads, seed, encode)
    )
    after = scrape_histograms(base_url, model)
    return summarise(result, shape, histogram_deltas(before, after))


def write_report(
    summaries: Sequence[RunSummary], out_dir: Path, title: str, slo_p99_ms: float | None = None
) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "loadtest.json"
    json_path.write_text(
        json.dumps(
            {"title": title, "slo_p99_ms": slo_p99_ms, "runs": [s.as_dict() for s in summaries]},
            indent=2,
        ),
        encoding="utf-8",
    )
    md_path = out_dir / "loadtest.md"
    md_path.write_text(f"# {title}\n\n{markdown_table(summaries, slo_p99_ms)}", encoding="utf-8")
    written = [json_path, md_path]
    if any(s.latency_ms["p50"] is not None for s in summaries):
        written.append(
            plot_latency_vs_load(summaries, out_dir / "latency_vs_load.png", title, slo_p99_ms)
        )
    return written
