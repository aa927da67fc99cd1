"""Side-by-side serving benchmark: polyprobe against the peers, same model, payloads and load.

One run of this script prepares the model (the real e5-small-based XLM-R pair classifier, a seeded
fresh head: speed does not depend on what the head learnt), exports it as a polyprobe bundle,
then starts each peer in turn on loopback, drives it with the same open-loop Poisson load sweep
from `loadtest/` and stops it. Every peer serves the same weights (PyTorch peers the checkpoint,
ONNX peers the bundle's fp32 graph) and answers polyprobe's own predict route, except
infinity-emb, whose /classify body is produced from the same pairs by an adapter.

    python bench/peers.py --out bench/out/peers            # all peers, both workloads
    python bench/peers.py --peers onnx-plain,polyprobe --workloads pawsx --step-s 4

A sweep starts at the same rate for every peer (its first step is the "low load" row), multiplies
the rate by --factor while p99 stays under --slo-ms with every request answered 200, then tries
once between the last rate that passed and the first that failed. Throughput at the SLO is the
best passing step's achieved rate.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from loadtest.payloads import Body, InputsMix, PayloadFactory, read_pairs  # noqa: E402
from loadtest.report import (  # noqa: E402
    RunSummary,
    markdown_table,
    meets_slo,
    offered_load_at_slo,
    throughput_at_slo,
)
from loadtest.runner import LoadShape  # noqa: E402
from loadtest.session import measure  # noqa: E402

PEERS_DIR = REPO / "bench" / "peers"
SHARED_DATA = REPO.parent / "shared" / "data" / "pawsx" / "dev"
LANGUAGES = ("de", "en", "es", "fr", "ja", "ko", "zh")
MODEL = "e5"
LABELS = ["not_paraphrase", "paraphrase"]
TOKENS_128 = 128


@dataclass(frozen=True)
class Workload:
    name: str
    data: Path
    start_rate: float
    describe: str


@dataclass(frozen=True)
class Peer:
    name: str
    describe: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    path: str = f"/v1/models/{MODEL}/predict"
    encode: Callable[[Body], Any] | None = None
    startup_s: float = 300.0


def run(command: list[str]) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def prepare_model(cache: Path) -> tuple[Path, Path]:
    """The classifier checkpoint and its bundle, built once and reused from the cache."""
    base = cache / "e5-small"
    checkpoint = cache / "e5-small-cls"
    bundle = cache / "peers-repo" / MODEL / "1"
    if not (base / "config.json").exists():
        run(["polyprobe", "base-model", "e5-small", "--out", str(base)])
    if not (checkpoint / "model.safetensors").exists():
        import torch
        from transformers import XLMRobertaForSequenceClassification

        torch.manual_seed(0)
        model = XLMRobertaForSequenceClassification.from_pretrained(
            base,
            num_labels=len(LABELS),
            id2label=dict(enumerate(LABELS)),
            label2id={label: i for i, label in enumerate(LABELS)},
        )
        model.save_pretrained(checkpoint)
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(base / name, checkpoint / name)
    if not (bundle / "bundle.json").exists():
        run(
            [
                "polyprobe", "export", str(checkpoint), "--out", str(bundle),
                "--precision", "fp32,int8", "--name", MODEL, "--version", "1",
            ]
        )  # fmt: skip
    return checkpoint, bundle


def prepare_data(cache: Path, tokenizer_path: Path) -> dict[str, Path]:
    """PAWS-X dev pairs of 7 languages as they are, and the same text cut to 128-token pairs."""
    from tokenizers import Tokenizer

    out = cache / "bench-data"
    out.mkdir(parents=True, exist_ok=True)
    pawsx = out / "pawsx-dev-7lang.jsonl"
    rows = [
        json.loads(line)
        for lang in LANGUAGES
        for line in (SHARED_DATA / f"{lang}.jsonl").read_text("utf-8").splitlines()
        if line.strip()
    ]
    pawsx.write_text(
        "".join(
            json.dumps({"sentence1": r["sentence1"], "sentence2": r["sentence2"]}) + "\n"
            for r in rows
            if r["sentence1"].strip() and r["sentence2"].strip()
        ),
        "utf-8",
    )
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    long_pairs = out / "pawsx-128-tokens.jsonl"
    made = []
    for lang in LANGUAGES:
        lang_rows = [
            json.loads(line)
            for line in (SHARED_DATA / f"{lang}.jsonl").read_text("utf-8").splitlines()
            if line.strip()
        ]
        for start in range(0, len(lang_rows) - 8, 8)[:30]:
            chunk = lang_rows[start : start + 8]
            side = (TOKENS_128 - 4) // 2  # <s> A </s></s> B </s>
            text = _cut_to_tokens(tokenizer, " ".join(r["sentence1"] for r in chunk), side)
            pair = _cut_to_tokens(tokenizer, " ".join(r["sentence2"] for r in chunk), side)
            if text and pair and len(tokenizer.encode(text, pair).ids) == TOKENS_128:
                made.append({"sentence1": text, "sentence2": pair, "lang": lang})
    long_pairs.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in made), "utf-8")
    print(f"{len(rows)} PAWS-X pairs, {len(made)} pairs of exactly {TOKENS_128} tokens", flush=True)
    return {"pawsx": pawsx, "128tok": long_pairs}


def _cut_to_tokens(tokenizer: Any, text: str, tokens: int) -> str | None:
    """A prefix of text that the tokenizer turns into exactly `tokens` tokens, if there is one."""
    encoding = tokenizer.encode(text, add_special_tokens=False)
    for keep in range(tokens, min(len(encoding.ids), tokens + 8) + 1):
        prefix = text[: encoding.offsets[keep - 1][1]].strip()
        if len(tokenizer.encode(prefix, add_special_tokens=False).ids) == tokens:
            return prefix
    return None


def infinity_body(body: Body) -> dict[str, Any]:
    """infinity-emb classifies single texts: a pair is sent as XLM-R writes it, A</s></s>B."""
    return {
        "model": MODEL,
        "input": [f"{item['text']}</s></s>{item['text_pair']}" for item in body["inputs"]],
    }


@dataclass(frozen=True)
class PeerExecutables:
    """Peers whose dependencies clash with polyprobe's live in their own environments."""

    ray_python: Path
    infinity_emb: Path


def peers(
    checkpoint: Path, bundle: Path, port: int, threads: int, executables: PeerExecutables
) -> dict[str, Peer]:
    python = sys.executable
    at = ["--port", str(port)]
    onnx = ["--bundle", str(bundle), *at, "--threads", str(threads)]
    python_path = {"PYTHONPATH": f"{REPO}{os.pathsep}{PEERS_DIR}"}
    serve = [python, "-m", "polyprobe", "serve", "--model-repo", str(bundle.parent.parent), *at]
    polyprobe_env = {"POLYPROBE_BUILD_DEMO_IF_EMPTY": "false", "POLYPROBE_LOG_LEVEL": "warning"}
    infinity = [
        str(executables.infinity_emb), "v2", "--model-id", str(checkpoint),
        "--served-model-name", MODEL, "--engine", "torch", "--device", "cpu",
        "--no-bettertransformer", "--no-model-warmup", "--batch-size", "32",
        "--host", "127.0.0.1", *at,
    ]  # fmt: skip
    listed = [
        Peer(
            "diy-transformers",
            "FastAPI + transformers pipeline (PyTorch fp32), per request",
            [python, str(PEERS_DIR / "diy_transformers.py"), "--checkpoint", str(checkpoint), *at],
            python_path,
        ),
        Peer(
            "onnx-plain",
            "FastAPI + the same ONNX Runtime session (fp32), one run per request, no batching",
            [python, str(PEERS_DIR / "onnx_plain.py"), *onnx],
            python_path,
        ),
        Peer(
            "ray-serve",
            "Ray Serve 1 replica, @serve.batch(32 requests, 5 ms) around the same ORT session",
            [str(executables.ray_python), str(PEERS_DIR / "ray_batch.py"), *onnx],
            # Ray otherwise swaps 127.0.0.1 for the machine's outward address: stay on loopback.
            {
                **python_path,
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                "RAY_USAGE_STATS_ENABLED": "0",
            },
            startup_s=240.0,
        ),
        Peer(
            "infinity-emb",
            "infinity-emb v2, torch engine (fp32), its own dynamic batching, /classify",
            infinity,
            {"INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1"},
            path="/classify",
            encode=infinity_body,
        ),
        Peer(
            "polyprobe",
            "polyprobe serve, fp32 (POLYPROBE_PRECISION=fp32)",
            serve,
            {**polyprobe_env, "POLYPROBE_PRECISION": "fp32"},
        ),
        Peer(
            "polyprobe-int8",
            "polyprobe serve, its CPU default: the bundle's int8 variant (other weights)",
            serve,
            {**polyprobe_env, "POLYPROBE_PRECISION": "int8"},
        ),
    ]
    return {peer.name: peer for peer in listed}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def started(peer: Peer, probe_body: Body, base_url: str, log_path: Path) -> Iterator[float]:
    """The peer's process group, up until it answers a real request; yields its startup time."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("POLYPROBE_")}
    environment.update(peer.env)
    began = time.monotonic()
    with log_path.open("w", encoding="utf-8") as log:
        process = subprocess.Popen(
            peer.command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=REPO,
            start_new_session=True,
        )
        try:
            body = probe_body if peer.encode is None else peer.encode(probe_body)
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"{peer.name} exited with {process.returncode}: {log_path}")
                if time.monotonic() - began > peer.startup_s:
                    raise RuntimeError(f"{peer.name} not ready in {peer.startup_s:.0f} s")
                try:
                    if httpx.post(base_url + peer.path, json=body, timeout=60).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(1.0)
            yield time.monotonic() - began
        finally:
            _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the peer's own process group (Ray and uvicorn spawn children), then SIGKILL."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass
    # Whatever the group leader left behind (Ray workers outlive a killed driver).
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def sweep(
    peer: Peer,
    base_url: str,
    pairs: list[dict[str, str]],
    mix: InputsMix,
    workload: Workload,
    args: argparse.Namespace,
    deadline: float,
) -> list[RunSummary]:
    """Rates up by --factor while the loosest SLO holds, then one step between pass and fail."""
    runs: list[RunSummary] = []

    def step(rate: float) -> bool:
        # Enough requests per step for a p99 worth the name even at the lowest rates.
        requests = max(args.min_requests, math.ceil(rate * args.step_s))
        shape = LoadShape("open", 0, rate=rate, max_requests=requests, timeout_s=args.timeout_s)
        payloads = PayloadFactory(pairs, mix, seed=args.seed)
        summary = measure(
            base_url, MODEL, shape, payloads, args.seed, path=peer.path, encode=peer.encode
        )
        runs.append(summary)
        lat = summary.latency_ms
        print(
            f"  {peer.name} {workload.name} {rate:6.2f} req/s -> {summary.throughput_rps:6.2f} "
            f"req/s p50 {lat['p50'] or 0:7.1f} p99 {lat['p99'] or 0:7.1f} ms {summary.statuses} "
            f"{summary.errors or ''}",
            flush=True,
        )
        return meets_slo(summary, max(args.slo_ms))

    rate, last_pass, first_fail = workload.start_rate, None, None
    for _ in range(args.max_steps):
        if time.monotonic() > deadline:
            print(f"  {peer.name} {workload.name}: out of time, sweep cut", flush=True)
            return runs
        if step(rate):
            last_pass, rate = rate, rate * args.factor
        else:
            first_fail = rate
            break
    if last_pass is not None and first_fail is not None and time.monotonic() < deadline:
        step(math.sqrt(last_pass * first_fail))
    return runs


def plot_comparison(
    results: dict[str, dict[str, list[RunSummary]]],
    workloads: list[Workload],
    slos_ms: list[float],
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(
        1, len(workloads), figsize=(6.5 * len(workloads), 4.5), squeeze=False
    )
    for axis, workload in zip(axes[0], workloads, strict=True):
        for peer_name, by_workload in results.items():
            runs = sorted(by_workload.get(workload.name, []), key=lambda s: s.offered_load)
            if not runs:
                continue
            p99 = [math.nan if s.latency_ms["p99"] is None else s.latency_ms["p99"] for s in runs]
            axis.plot([s.offered_load for s in runs], p99, marker="o", label=peer_name)
        for slo_ms in slos_ms:
            axis.axhline(slo_ms, color="grey", linestyle="--", linewidth=0.8)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("offered load (requests/s, Poisson)")
        axis.set_ylabel("p99 latency (ms)")
        axis.set_title(workload.describe, fontsize=9)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def results_markdown(
    results: dict[str, dict[str, list[RunSummary]]],
    workloads: list[Workload],
    peer_info: dict[str, dict[str, Any]],
    slo_ms: float,
) -> str:
    """Per workload: each peer's best passing step and its interpolated SLO crossing, with
    polyprobe's ratios to the best non-polyprobe peer on both."""
    lines = []
    for workload in workloads:
        lines += [
            f"**{workload.describe}**",
            "",
            f"| peer | throughput at p99 <= {slo_ms:g} ms (req/s) | inputs/s | at offered | "
            f"vs best peer | p99 crosses {slo_ms:g} ms at (offered req/s, log-log interpolated) "
            f"| vs best peer | low load ({workload.start_rate:g} req/s) p50 / p99 ms |",
            "|---|---|---|---|---|---|---|---|",
        ]
        rows = {
            name: (
                throughput_at_slo(runs.get(workload.name, []), slo_ms),
                offered_load_at_slo(runs.get(workload.name, []), slo_ms),
                runs.get(workload.name),
            )
            for name, runs in results.items()
        }
        peers_only = [row for name, row in rows.items() if not name.startswith("polyprobe")]
        best_step = max((b.throughput_rps for b, _, _ in peers_only if b), default=0.0)
        best_crossing = max((c.offered_load for _, c, _ in peers_only if c), default=0.0)
        for name, (best, crossing, runs) in rows.items():
            if not runs:
                lines.append(
                    f"| {name} | not run: {peer_info[name].get('error', '-')} |" + " |" * 6
                )
                continue
            ours = name.startswith("polyprobe")
            low = runs[0].latency_ms
            step_cells = (
                f"{best.throughput_rps:.1f} | {best.throughput_inputs_per_s:.1f} | "
                f"{best.offered_load:.2f} | "
                + (f"{best.throughput_rps / best_step:.2f}x" if ours and best_step else "")
                if best
                else "none met the SLO | | |"
            )
            crossing_cells = (
                ("" if crossing.bracketed else ">= ")
                + f"{crossing.offered_load:.1f} | "
                + (
                    f"{crossing.offered_load / best_crossing:.2f}x"
                    if ours and best_crossing
                    else ""
                )
                if crossing
                else "- |"
            )
            lines.append(
                f"| {name} | {step_cells} | {crossing_cells} | "
                f"{low['p50'] or 0:.0f} / {low['p99'] or 0:.0f} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=Path("/work/cache"))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "peers")
    parser.add_argument(
        "--peers", default="diy-transformers,onnx-plain,ray-serve,infinity-emb,polyprobe"
    )
    parser.add_argument("--workloads", default="pawsx,128tok")
    parser.add_argument("--mix", default="1", help="inputs per request (loadtest syntax)")
    parser.add_argument(
        "--slo-ms", type=float, nargs="+", default=[250.0, 1000.0], help="p99 SLOs to report"
    )
    parser.add_argument("--step-s", type=float, default=5.0, help="seconds of arrivals per step")
    parser.add_argument("--min-requests", type=int, default=10, help="requests per step, at least")
    parser.add_argument("--budget-s", type=float, default=900.0, help="stop sweeping after this")
    parser.add_argument("--factor", type=float, default=1.6)
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument("--timeout-s", type=float, default=10.0)
    parser.add_argument("--pawsx-start-rate", type=float, default=1.0)
    parser.add_argument("--long-start-rate", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--ray-python",
        type=Path,
        default=Path(sys.executable),
        help="a Python with ray[serve] and onnxruntime (polyprobe's own `.[ray]` install has both)",
    )
    parser.add_argument(
        "--infinity-emb",
        type=Path,
        default=Path("/work/venvs/infinity/bin/infinity_emb"),
        help="infinity-emb's CLI, from its own venv (pin: infinity-emb[server,torch]==0.0.78)",
    )
    parser.add_argument(
        "--render",
        type=Path,
        metavar="PEERS_JSON",
        help="run nothing: rewrite peers.md and the plot from a saved peers.json",
    )
    args = parser.parse_args()
    if args.render:
        return render(args.render)
    executables = PeerExecutables(args.ray_python, args.infinity_emb)
    # A SIGTERM (e.g. from `timeout`) unwinds through the finally blocks that stop the peers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    checkpoint, bundle = prepare_model(args.cache)
    data = prepare_data(args.cache, bundle / "tokenizer.json")
    all_workloads = {
        "pawsx": Workload(
            "pawsx", data["pawsx"], args.pawsx_start_rate,
            f"PAWS-X dev pairs, 7 languages, {args.mix} input(s) per request",
        ),
        "128tok": Workload(
            "128tok", data["128tok"], args.long_start_rate,
            f"PAWS-X text cut to exactly {TOKENS_128}-token pairs, {args.mix} input(s) per request",
        ),
    }  # fmt: skip
    workloads = [all_workloads[w] for w in args.workloads.split(",")]
    mix = InputsMix.parse(args.mix)
    args.out.mkdir(parents=True, exist_ok=True)
    wanted = args.peers.split(",")
    results: dict[str, dict[str, list[RunSummary]]] = {}
    peer_info: dict[str, dict[str, Any]] = {}
    load_before = os.getloadavg()
    began = time.monotonic()
    deadline = began + args.budget_s
    for name in wanted:
        if time.monotonic() > deadline:
            peer_info[name] = {"error": f"not started: the run's {args.budget_s:.0f} s were spent"}
            results[name] = {}
            continue
        port = free_port()
        peer = peers(checkpoint, bundle, port, args.threads, executables)[name]
        base_url = f"http://127.0.0.1:{port}"
        results[peer.name] = {}
        peer_info[peer.name] = {"describe": peer.describe, "command": peer.command}
        probe = {"inputs": [read_pairs([workloads[0].data])[0]]}
        try:
            with started(peer, probe, base_url, args.out / f"{peer.name}.log") as startup_s:
                peer_info[peer.name]["startup_s"] = startup_s
                print(f"{peer.name}: ready in {startup_s:.0f} s at {base_url}", flush=True)
                for workload in workloads:
                    pairs = read_pairs([workload.data])
                    warm = PayloadFactory(pairs, mix, seed=-1)
                    for _ in range(5):
                        body = warm.next_body()
                        httpx.post(
                            base_url + peer.path,
                            json=body if peer.encode is None else peer.encode(body),
                            timeout=60,
                        ).raise_for_status()
                    results[peer.name][workload.name] = sweep(
                        peer, base_url, pairs, mix, workload, args, deadline
                    )
        except (RuntimeError, httpx.HTTPError) as exc:
            peer_info[peer.name]["error"] = str(exc)
            print(f"{peer.name}: {exc}", flush=True)
    elapsed = time.monotonic() - began
    machine = {
        "cpus": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "elapsed_s": elapsed,
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }
    payload = {
        "machine": machine,
        "args": {k: str(v) for k, v in vars(args).items()},
        "slos_ms": args.slo_ms,
        "workloads": [
            {"name": w.name, "start_rate": w.start_rate, "describe": w.describe} for w in workloads
        ],
        "peers": peer_info,
        "runs": {
            name: {w: [s.as_dict() for s in runs] for w, runs in by_w.items()}
            for name, by_w in results.items()
        },
    }
    (args.out / "peers.json").write_text(json.dumps(payload, indent=2), "utf-8")
    print(write_reports(payload, args.out))
    print(f"machine: {machine}\nwrote {args.out}/peers.json, peers.md, p99_vs_load.png")
    return 0


def write_reports(payload: dict[str, Any], out: Path) -> str:
    """peers.md and p99_vs_load.png from a run's peers.json payload; returns the summary tables."""
    workloads = [
        Workload(w["name"], Path(), float(w["start_rate"]), w["describe"])
        for w in payload["workloads"]
    ]
    results = {
        name: {w: [RunSummary(**s) for s in runs] for w, runs in by_w.items()}
        for name, by_w in payload["runs"].items()
    }
    slos_ms = [float(slo) for slo in payload["slos_ms"]]
    summary = "\n".join(
        results_markdown(results, workloads, payload["peers"], slo) for slo in slos_ms
    )
    detail = "\n".join(
        f"### {name}, {workload}\n\n{markdown_table(runs, max(slos_ms))}"
        for name, by_w in results.items()
        for workload, runs in by_w.items()
    )
    (out / "peers.md").write_text(
        f"# Peers benchmark\n\nmachine: {payload['machine']}\n\n{summary}\n{detail}", "utf-8"
    )
    plot_comparison(results, workloads, slos_ms, out / "p99_vs_load.png")
    return summary


def render(peers_json: Path) -> int:
    """Rewrite peers.md and the plot beside a saved peers.json (e.g. after a report change)."""
    print(write_reports(json.loads(peers_json.read_text("utf-8")), peers_json.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
