"""Prometheus metrics of one service instance, on its own registry (tests run several apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Request latency spans sub-millisecond health checks to multi-second CPU batches.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
INPUT_COUNT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
# Padded tokens of one batch: one short input up to a full GPU budget.
BATCH_TOKEN_BUCKETS = tuple(2**p for p in range(4, 18))
RATIO_BUCKETS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


class ServiceMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.request_duration = Histogram(
            "polyprobe_request_duration_seconds",
            "HTTP request latency, from first byte received to response sent",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokenize_duration = Histogram(
            "polyprobe_tokenize_duration_seconds",
            "Time to tokenize the inputs of one request (off the event loop)",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inference_duration = Histogram(
            "polyprobe_inference_duration_seconds",
            "Time ONNX Runtime spends on one batch",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait_duration = Histogram(
            "polyprobe_queue_wait_duration_seconds",
            "Time an input waits in its model's queue before its batch starts",
            ["model", "priority"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "polyprobe_batch_size",
            "Inputs in one batch the batcher ran",
            ["model"],
            buckets=INPUT_COUNT_BUCKETS,
            registry=self.registry,
        )
        self.batch_tokens = Histogram(
            "polyprobe_batch_tokens",
            "Padded tokens in one batch (batch size x longest input)",
            ["model"],
            buckets=BATCH_TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.padding_ratio = Histogram(
            "polyprobe_batch_padding_ratio",
            "Share of a batch's tokens that are padding",
            ["model"],
            buckets=RATIO_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "polyprobe_queue_depth",
            "Inputs waiting in a model's queue, by priority (predict before probe)",
            ["model", "priority"],
            registry=self.registry,
        )
        self.queue_tokens = Gauge(
            "polyprobe_queue_tokens",
            "Tokens (unpadded) waiting in a model's queue",
            ["model"],
            registry=self.registry,
        )
        self.in_flight_requests = Gauge(
            "polyprobe_in_flight_requests",
            "Requests admitted to a model's batcher and not answered yet",
            ["model"],
            registry=self.registry,
        )
        self.warmup_batches = Counter(
            "polyprobe_warmup_batches",
            "Warm-up runs, one per length bucket, before the model serves",
            ["model"],
            registry=self.registry,
        )
        self.inputs_per_request = Histogram(
            "polyprobe_inputs_per_request",
            "Texts or text pairs in one prediction request",
            ["model"],
            buckets=INPUT_COUNT_BUCKETS,
            registry=self.registry,
        )
        self.truncated_inputs = Counter(
            "polyprobe_truncated_inputs",
            "Inputs cut to the model's max sequence length",
            ["model"],
            registry=self.registry,
        )
        self.errors = Counter(
            "polyprobe_errors",
            "Requests answered with an error, by error type",
            ["type"],
            registry=self.registry,
        )
        self.model_info = Gauge(
            "polyprobe_model_info",
            "Models this instance serves (value 1); labels describe the loaded variant",
            ["model", "version", "task", "precision", "provider", "sha256"],
            registry=self.registry,
        )
        self.model_reloads = Counter(
            "polyprobe_model_reloads",
            "New model versions after startup (poll or admin reload): swapped in or refused",
            ["model", "result"],
            registry=self.registry,
        )
        self.model_ready = Gauge(
            "polyprobe_model_ready",
            "1 when the model loaded and serves, 0 when it was refused",
            ["model"],
            registry=self.registry,
        )
        # Robustness of the latest probe of each model: invariance families only (a directional
        # family is expected to change predictions, so its change rate is no robustness score).
        self.probe_flip_rate = Gauge(
            "polyprobe_probe_flip_rate",
            "Flip rate of the latest probe measuring it, per model, family, severity and language",
            ["model", "family", "severity", "lang"],
            registry=self.registry,
        )
        self.probe_accuracy_delta = Gauge(
            "polyprobe_probe_accuracy_delta",
            "Perturbed minus clean accuracy of the latest probe measuring it with gold labels",
            ["model", "family", "severity", "lang"],
            registry=self.registry,
        )
        self.probe_evaluations = Counter(
            "polyprobe_probe_evaluations",
            "Perturbed inputs a probe sent to the model (no-ops and skipped ones excluded)",
            ["model"],
            registry=self.registry,
        )
        self.probe_duration = Histogram(
            "polyprobe_probe_duration_seconds",
            "Time to run one probe or comparison, perturbation to statistics",
            ["endpoint"],
            # From a fraction of a second (a few inputs) to minutes (thousands of samples, CPU).
            buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0),
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
