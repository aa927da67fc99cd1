"""The service's configuration: the only place polyprobe reads the environment (prefix POLYPROBE_)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from export.artifacts import SHIPPED_ARTIFACTS
from export.bundle import Precision
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="POLYPROBE_", extra="forbid", frozen=True)

    model_repo: Path = Field(
        default=Path("models"), description="directory laid out as <name>/<version>/bundle.json"
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto: CUDA when onnxruntime-gpu sees a GPU, else CPU"
    )
    precision: Precision | None = Field(
        default=None,
        description="force a model variant; default: fp16 on CUDA, int8 on CPU if it passed parity, else fp32",
    )
    intra_op_threads: int = Field(
        default=0,
        ge=0,
        description="ONNX Runtime intra-op threads per batch; 0: the cores divided among the "
        "inference streams",
    )
    inference_streams: int = Field(
        default=1,
        ge=1,
        le=64,
        description="batches of one model that run at once. On CPU each stream gets cores / "
        "streams intra-op threads: small matrices parallelise poorly inside one call, so under "
        "load 2 single-threaded streams on 2 cores beat 1 two-threaded one, while one input "
        "alone runs on fewer cores (see bench/RESULTS.md)",
    )
    max_inputs_per_request: int = Field(default=64, ge=1)
    max_text_chars: int = Field(default=10_000, ge=1, description="per text, in code points")
    on_overlength: Literal["truncate", "reject"] = Field(
        default="truncate",
        description="inputs longer than the model's max sequence length: truncate and flag, or 413",
    )
    inference_batch_size: int = Field(
        default=32, ge=1, description="most inputs the batcher puts in one ONNX Runtime call"
    )
    batch_max_tokens: int | None = Field(
        default=None,
        ge=1,
        description="token budget of one batch, counting padding (inputs x longest input); "
        "unset: 512 on CPU, where padded tokens cost real FLOPs, 4096 on CUDA",
    )
    batch_wait_ms: float = Field(
        default=2.0,
        ge=0,
        le=1000,
        description="under load, how long a short batch may wait to fill (never when idle)",
    )
    max_queue_tokens: int = Field(
        default=65_536,
        ge=1,
        description="tokens of predictions queued per model; beyond them 429 with Retry-After",
    )
    request_timeout_ms: int = Field(
        default=30_000,
        ge=0,
        description="prediction deadline: 503 rather than a later answer; 0: none",
    )
    strict_readiness: bool = Field(
        default=True, description="/readyz is 200 only when every model in the repository loaded"
    )
    model_poll_interval_s: float = Field(
        default=0.0,
        ge=0,
        description="seconds between looks for new model versions in the repository (swapped in "
        "without downtime); 0: only at startup and on POST /admin/models/{model}/reload",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="json: one object per line with request ids (inputs only with log_inputs)",
    )
    log_inputs: bool = Field(
        default=False,
        description="off by default for privacy: request texts never reach the log. On: each "
        "access log line carries the request's texts (v1 and v2 bodies, JSON or binary "
        "tensors), each cut to 200 characters with the cut marked '…[+N chars]', at most 64 "
        "inputs (the rest counted in inputs_not_logged)",
    )
    tracing: Literal["off", "console", "otlp"] = Field(
        default="off",
        description="OpenTelemetry: one server span per HTTP request (not health checks or "
        "/metrics). off: no OpenTelemetry SDK is loaded; console: spans printed to stdout; "
        'otlp: spans sent over OTLP/HTTP (see tracing_otlp_endpoint). Needs pip install "polyprobe[tracing]"',
    )
    tracing_otlp_endpoint: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="tracing=otlp: the collector's full traces URL, e.g. "
        "http://otel-collector:4318/v1/traces; unset: the exporter's own OTEL_EXPORTER_OTLP_* "
        "variables, else http://localhost:4318/v1/traces",
    )
    build_demo_if_empty: bool = Field(
        default=True,
        description="`polyprobe serve` fills an empty repository: bundles assembled from the "
        "artifacts in artifacts_dir, or the demo bundle when there are none",
    )
    artifacts_dir: Path = Field(
        default=SHIPPED_ARTIFACTS,
        description="trained LoRA artifacts to assemble into an empty repository "
        "(default: those shipped with polyprobe)",
    )
    max_probe_evaluations: int = Field(
        default=5000,
        ge=1,
        description="per probe request: inputs x total samples (x 2 for compare); larger -> 413",
    )
    max_probe_inputs: int = Field(default=2000, ge=1, description="inputs in one probe request")
    max_probe_job_evaluations: int = Field(
        default=200_000, ge=1, description="per probe job (POST /v1/probe/jobs), as above"
    )
    max_probe_jobs: int = Field(
        default=100,
        ge=1,
        description="probe jobs kept in memory; the oldest finished one makes room for a new one",
    )
    probe_batch_size: int = Field(
        default=256,
        ge=1,
        description="inputs per model call of a probe; prediction traffic gets a turn in between",
    )
    probe_worker_threads: int = Field(
        default=1,
        ge=1,
        description="probe model calls running at once, over all probes (predictions unaffected)",
    )
    probe_bootstrap_resamples: int = Field(
        default=2000, ge=100, le=100_000, description="bootstrap resamples per interval"
    )
    probe_detect_languages: str = Field(
        default="ar,bg,de,el,en,es,fr,hi,ja,ko,ru,sw,th,tr,ur,vi,zh",
        pattern=r"^[a-z]{2}(,[a-z]{2})*$",
        description="comma-separated ISO 639-1 codes that language detection chooses among "
        "(PAWS-X's and XNLI's by default); fewer candidates, fewer confusions",
    )
    api_keys: SecretStr | None = Field(
        default=None,
        description="comma-separated bearer API keys (>= 16 characters each); unset: no auth",
    )
    api_keys_file: Path | None = Field(
        default=None, description="file of bearer API keys, one per line (# comments allowed)"
    )
    rate_limit_per_second: float = Field(
        default=0.0,
        ge=0,
        description="prediction requests per second per API key (or client address); 0: unlimited",
    )
    rate_limit_burst: int = Field(
        default=20, ge=1, description="prediction requests allowed at once"
    )
    probe_rate_limit_per_second: float = Field(
        default=0.0,
        ge=0,
        description="probe requests per second per API key (or client address); 0: unlimited",
    )
    probe_rate_limit_burst: int = Field(
        default=2, ge=1, description="probe requests allowed at once"
    )
    max_body_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, description="request bodies above this size get 413"
    )
    cors_allow_origins: list[str] = Field(
        default_factory=list,
        description='origins allowed by CORS, as JSON (e.g. ["https://app.example"]); empty: CORS off',
    )
    shutdown_timeout_s: int = Field(
        default=30,
        ge=1,
        description="on SIGTERM, how long in-flight and queued work may take before the server "
        "exits (keep Kubernetes' terminationGracePeriodSeconds above it)",
    )
    ray_address: str | None = Field(
        default=None,
        description="`serve --ray`: the Ray cluster to join (head's host:port, or 'auto'); "
        "unset: start a local single-node Ray",
    )
    ray_min_replicas: int = Field(default=1, ge=0, description="`serve --ray`: fewest replicas")
    ray_max_replicas: int = Field(default=4, ge=1, description="`serve --ray`: most replicas")
    ray_target_ongoing_requests: float = Field(
        default=8.0,
        gt=0,
        description="`serve --ray`: the autoscaler adds replicas when the requests in flight "
        "or queued per replica stay above this, and removes them when below",
    )
    ray_max_ongoing_requests: int = Field(
        default=32,
        ge=1,
        description="`serve --ray`: requests one replica takes at once (its batcher's supply); "
        "more wait in Ray's queue",
    )
    ray_upscale_delay_s: float = Field(
        default=30.0, ge=0, description="`serve --ray`: load must stay high this long to scale up"
    )
    ray_downscale_delay_s: float = Field(
        default=600.0, ge=0, description="`serve --ray`: load must stay low this long to scale down"
    )
    ray_num_cpus: float = Field(default=1.0, ge=0, description="`serve --ray`: CPUs per replica")
    ray_num_gpus: float = Field(
        default=0.0,
        ge=0,
        description="`serve --ray`: GPUs per replica; a fraction (e.g. 0.25) shares one GPU "
        "among several replicas",
    )
    ray_proxy_location: Literal["EveryNode", "HeadOnly"] = Field(
        default="EveryNode",
        description="`serve --ray`: run Ray Serve's HTTP proxy on every node or on the head only",
    )


def unknown_environment_variables() -> list[str]:
    """POLYPROBE_* variables that match no setting: usually a typo the user wants to hear about."""
    known = {f"POLYPROBE_{name.upper()}" for name in Settings.model_fields}
    return sorted(key for key in os.environ if key.startswith("POLYPROBE_") and key not in known)
