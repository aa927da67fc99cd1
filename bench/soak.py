"""Soak: bounded mixed predict/probe load against a real loopback server, RSS and latency over time.

    nice -n 5 python bench/soak.py --model-repo models --duration 600 \
        --data ../shared/data/pawsx/dev/de.jsonl ../shared/data/pawsx/dev/ja.jsonl

Starts `polyprobe serve` on a free loopback port, runs closed-loop clients (predict and probe) for
--duration seconds, samples the server's RSS from /proc every --interval seconds, and writes
soak_<stamp>.csv (one row per sample), soak_<stamp>.png and soak_<stamp>.json (the summary) to
--out. Memory counts as flat when the least-squares slope of RSS after --warmup seconds is within
--max-slope-mb-per-min; the exit status is 1 when it is not, or when any request failed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from loadtest.payloads import InputsMix, PayloadFactory, read_pairs

LISTENING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")
# Used when no --data is given: a few pairs in several scripts.
BUILTIN_PAIRS = [
    {"text": "Die Katze schläft im Garten.", "text_pair": "Le chat dort dans le jardin."},
    {"text": "猫は庭で寝ています。", "text_pair": "犬は駅で走っています。"},
    {"text": "Кошка спит в саду.", "text_pair": "Собака спит в саду."},
    {"text": "The dog runs in the park.", "text_pair": "El perro corre en el parque."},
    {"text": "बिल्ली बगीचे में सो रही है।", "text_pair": "बिल्ली बगीचे में सो रही है।"},
    {"text": "แมวนอนอยู่ในสวน", "text_pair": "สุนัขวิ่งอยู่ในสถานี"},
]


@dataclass
class Tally:
    """What the clients saw since the last sample (latencies) and in total (counts)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"predict": [], "probe": []})
    requests: dict[str, int] = field(default_factory=lambda: {"predict": 0, "probe": 0})
    errors: dict[str, int] = field(default_factory=lambda: {"predict": 0, "probe": 0})
    last_error: str = ""

    def record(self, kind: str, seconds: float, ok: bool, problem: str = "") -> None:
        with self.lock:
            self.requests[kind] += 1
            if ok:
                self.latencies[kind].append(seconds)
            else:
                self.errors[kind] += 1
                self.last_error = problem

    def drain(self) -> dict[str, list[float]]:
        with self.lock:
            taken, self.latencies = self.latencies, {"predict": [], "probe": []}
            return taken


@dataclass
class Sample:
    elapsed_s: float
    rss_mb: float
    predict_requests: int
    probe_requests: int
    errors: int
    predict_p50_ms: float | None
    predict_p99_ms: float | None
    probe_p50_ms: float | None
    probe_p99_ms: float | None


def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def slope_mb_per_min(samples: list[Sample], warmup_s: float) -> tuple[float, int]:
    """Least-squares slope of RSS over time after the warm-up, and how many samples it used."""
    points = [(s.elapsed_s / 60, s.rss_mb) for s in samples if s.elapsed_s >= warmup_s]
    if len(points) < 3:
        raise ValueError("fewer than 3 samples after the warm-up: lengthen --duration")
    mean_t = sum(t for t, _ in points) / len(points)
    mean_m = sum(m for _, m in points) / len(points)
    num = sum((t - mean_t) * (m - mean_m) for t, m in points)
    den = sum((t - mean_t) ** 2 for t, _ in points)
    return num / den, len(points)


def start_server(model_repo: Path, threads: int) -> tuple[subprocess.Popen[str], str, list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYPROBE_")}
    env |= {"POLYPROBE_BUILD_DEMO_IF_EMPTY": "false", "POLYPROBE_INTRA_OP_THREADS": str(threads)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "polyprobe",
            "serve",
            "--model-repo",
            str(model_repo),
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    log: list[str] = []
    port: list[int] = []

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            log.append(line)
            if match := LISTENING.search(line):
                port.append(int(match.group(1)))

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + 600
    while not port:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("server did not start:\n" + "".join(log))
        time.sleep(0.1)
    return process, f"http://127.0.0.1:{port[0]}", log


def predict_client(
    url: str, model: str, payloads: PayloadFactory, tally: Tally, stop: threading.Event
) -> None:
    with httpx.Client(base_url=url, timeout=120) as client:
        while not stop.is_set():
            body = payloads.next_body()
            began = time.perf_counter()
            try:
                response = client.post(f"/v1/models/{model}/predict", json=body)
                ok, problem = response.status_code == 200, f"predict {response.status_code}"
            except httpx.HTTPError as exc:
                ok, problem = False, f"predict {type(exc).__name__}: {exc}"
            tally.record("predict", time.perf_counter() - began, ok, problem)


def probe_client(
    url: str,
    model: str,
    pairs: list[dict[str, str]],
    tally: Tally,
    stop: threading.Event,
    seed: int,
) -> None:
    request = 0
    with httpx.Client(base_url=url, timeout=300) as client:
        while not stop.is_set():
            # A fresh seed each time, so the perturbed texts (and any caches they touch) vary.
            start = (request * 4) % len(pairs)
            inputs = [pairs[(start + i) % len(pairs)] | {"id": str(i)} for i in range(4)]
            body = {
                "inputs": inputs,
                "perturbations": [
                    {"family": "char_swap", "severity": 0.2, "samples": 2},
                    {"family": "keyboard_typo", "severity": 0.1},
                ],
                "seed": seed + request,
            }
            request += 1
            began = time.perf_counter()
            try:
                response = client.post(f"/v1/models/{model}/probe", json=body)
                ok, problem = response.status_code == 200, f"probe {response.status_code}"
            except httpx.HTTPError as exc:
                ok, problem = False, f"probe {type(exc).__name__}: {exc}"
            tally.record("probe", time.perf_counter() - began, ok, problem)


def plot(samples: list[Sample], path: Path, title: str, warmup_s: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [s.elapsed_s / 60 for s in samples]
    figure, (memory, latency, errors) = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    memory.plot(minutes, [s.rss_mb for s in samples], color="tab:blue")
    memory.axvline(warmup_s / 60, color="grey", linestyle="--", label="end of warm-up")
    memory.set_ylabel("server RSS (MiB)")
    memory.legend(loc="lower right")
    for name, style in (("predict", "-"), ("probe", "--")):
        for q, color in (("p50", "tab:green"), ("p99", "tab:red")):
            values = [getattr(s, f"{name}_{q}_ms") for s in samples]
            latency.plot(minutes, values, linestyle=style, color=color, label=f"{name} {q}")
    latency.set_yscale("log")
    latency.set_ylabel("latency per interval (ms)")
    latency.legend(loc="upper right", ncol=2, fontsize="small")
    errors.plot(minutes, [s.errors for s in samples], color="tab:red")
    errors.set_ylabel("failed requests (total)")
    errors.set_xlabel("minutes")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model-repo", type=Path, required=True, help="repository to serve")
    parser.add_argument("--model", default="demo")
    parser.add_argument("--data", type=Path, nargs="*", default=[], help="JSONL sentence pairs")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=120.0, help="seconds before the slope")
    parser.add_argument("--predict-clients", type=int, default=2)
    parser.add_argument("--probe-clients", type=int, default=1)
    parser.add_argument("--mix", default="1:0.6,4:0.3,16:0.1", help="inputs per predict request")
    parser.add_argument("--threads", type=int, default=2, help="server's ONNX Runtime threads")
    parser.add_argument("--max-slope-mb-per-min", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args(argv)
    if args.warmup >= args.duration:
        parser.error("--warmup must be shorter than --duration")

    pairs = read_pairs(args.data) if args.data else BUILTIN_PAIRS
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    args.out.mkdir(parents=True, exist_ok=True)
    process, url, log = start_server(args.model_repo, args.threads)
    tally = Tally()
    stop = threading.Event()
    samples: list[Sample] = []
    try:
        clients = [
            threading.Thread(
                target=predict_client,
                args=(
                    url,
                    args.model,
                    PayloadFactory(pairs, InputsMix.parse(args.mix), seed=args.seed + i),
                    tally,
                    stop,
                ),
            )
            for i in range(args.predict_clients)
        ] + [
            threading.Thread(
                target=probe_client,
                args=(url, args.model, pairs, tally, stop, args.seed + 1000 * i),
            )
            for i in range(args.probe_clients)
        ]
        began = time.monotonic()
        for thread in clients:
            thread.start()
        next_sample = began + args.interval
        while (now := time.monotonic()) - began < args.duration:
            time.sleep(max(0.0, next_sample - now))
            next_sample += args.interval
            if process.poll() is not None:
                raise RuntimeError("the server exited during the soak:\n" + "".join(log[-40:]))
            window = tally.drain()
            with tally.lock:
                requests, errors = dict(tally.requests), sum(tally.errors.values())
            samples.append(
                Sample(
                    elapsed_s=round(time.monotonic() - began, 2),
                    rss_mb=round(rss_mb(process.pid), 2),
                    predict_requests=requests["predict"],
                    probe_requests=requests["probe"],
                    errors=errors,
                    predict_p50_ms=quantile(window["predict"], 0.5),
                    predict_p99_ms=quantile(window["predict"], 0.99),
                    probe_p50_ms=quantile(window["probe"], 0.5),
                    probe_p99_ms=quantile(window["probe"], 0.99),
                )
            )
        stop.set()
        for thread in clients:
            thread.join(timeout=300)
    finally:
        stop.set()
        process.terminate()
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    slope, used = slope_mb_per_min(samples, args.warmup)
    after = [s.rss_mb for s in samples if s.elapsed_s >= args.warmup]
    errors = samples[-1].errors
    flat = abs(slope) <= args.max_slope_mb_per_min
    summary = {
        "duration_s": args.duration,
        "interval_s": args.interval,
        "warmup_s": args.warmup,
        "clients": {"predict": args.predict_clients, "probe": args.probe_clients},
        "mix": args.mix,
        "requests": {"predict": samples[-1].predict_requests, "probe": samples[-1].probe_requests},
        "errors": errors,
        "last_error": tally.last_error,
        "rss_mb": {
            "start": samples[0].rss_mb,
            "after_warmup_first": after[0],
            "after_warmup_min": min(after),
            "after_warmup_max": max(after),
            "end": samples[-1].rss_mb,
        },
        "rss_slope_mb_per_min": round(slope, 4),
        "slope_samples": used,
        "max_slope_mb_per_min": args.max_slope_mb_per_min,
        "memory_flat": flat,
        "load_average_at_end": os.getloadavg(),
        "cpus": os.cpu_count(),
    }
    base = args.out / f"soak_{stamp}"
    with base.with_suffix(".csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(asdict(samples[0])))
        writer.writeheader()
        writer.writerows(asdict(s) for s in samples)
    base.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    title = (
        f"polyprobe soak: {args.predict_clients} predict + {args.probe_clients} probe clients, "
        f"{args.duration / 60:.0f} min; RSS slope {slope:+.3f} MiB/min after warm-up"
    )
    plot(samples, base.with_suffix(".png"), title, args.warmup)
    print(json.dumps(summary, indent=2))
    for suffix in (".csv", ".json", ".png"):
        print(f"wrote {base.with_suffix(suffix)}")
    return 0 if flat and errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
