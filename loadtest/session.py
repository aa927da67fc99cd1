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
from loadtest.runner import LoadShape, run_load


def scrape_histograms(base_url: str, model: str) -> dict[str, HistogramDelta]:
    """The predict route's request histogram and the model's own stage histograms."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    request = parse_histograms(text, route="/v1/models/{model}/predict")
    stages = parse_histograms(text, model=model)
    return {
        "polyprobe_request_duration_seconds": request["polyprobe_request_duration_seconds"],
        **{name: h for name, h in stages.items() if name != "polyprobe_request_duration_seconds"},
    }


def measure(
    base_url: str, model: str, shape: LoadShape, payloads: PayloadFactory, seed: int = 0
) -> RunSummary:
    before = scrape_histograms(base_url, model)
    records = asyncio.run(run_load(base_url, model, shape, payloads, seed))
    after = scrape_histograms(base_url, model)
    server = histogram_deltas(before, after)
    return summarise(records, shape.describe(), shape.duration_s, server)


def write_report(summaries: Sequence[RunSummary], out_dir: Path, title: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "loadtest.json"
    json_path.write_text(
        json.dumps({"title": title, "runs": [s.as_dict() for s in summaries]}, indent=2),
        encoding="utf-8",
    )
    md_path = out_dir / "loadtest.md"
    md_path.write_text(f"# {title}\n\n{markdown_table(summaries)}", encoding="utf-8")
    written = [json_path, md_path]
    if any(s.latency_ms["p50"] is not None for s in summaries):
        written.append(plot_latency_vs_load(summaries, out_dir / "latency_vs_load.png"))
    return written
