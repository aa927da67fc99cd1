"""Peer 3: Ray Serve, `@serve.batch` around the same ONNX Runtime session and tokenizer.

One replica on a local Ray cluster limited to this machine's cores; Ray's own HTTP proxy in front
of a FastAPI ingress with polyprobe's route. `@serve.batch` collects concurrent requests (up to
--max-batch requests, waiting at most --wait-ms for more), the batch runs as one padded session
call and each request gets its rows back.

No `from __future__ import annotations` here: FastAPI must see the real types of the ingress
methods after Ray has shipped the class to its worker, or the body is taken for a query field.
"""

import argparse
import itertools
import os
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np
import ray
from fastapi import FastAPI, HTTPException
from ray import serve

app = FastAPI()


@serve.deployment(num_replicas=1, max_ongoing_requests=1024)
@serve.ingress(app)
class OnnxClassifier:
    def __init__(self, bundle_dir: str, threads: int, max_batch: int, wait_ms: float) -> None:
        # Imported here: the replica runs in a Ray worker process, not in this script.
        import onnxruntime as ort
        from common import bundle_files

        from export.features import BundleTokenizer

        files = bundle_files(Path(bundle_dir))
        self._labels = files.labels
        self._tokenizer = BundleTokenizer.from_file(
            files.tokenizer, max_length=files.max_length, input_names=files.input_names
        )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        self._session = ort.InferenceSession(
            str(files.model), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.classify.set_max_batch_size(max_batch)
        self.classify.set_batch_wait_timeout_s(wait_ms / 1000)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def classify(self, requests: list[list[tuple[str, str | None]]]) -> list[np.ndarray]:
        flat = [pair for pairs in requests for pair in pairs]
        (logits,) = self._session.run(["logits"], self._tokenizer.encode(flat).feeds)
        bounds = np.cumsum([0, *(len(pairs) for pairs in requests)])
        return [logits[start:end] for start, end in itertools.pairwise(bounds)]

    @app.post("/v1/models/{model}/predict")
    async def predict(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        from common import pairs_of, predictions

        try:
            pairs = pairs_of(body)
        except (ValueError, KeyError, TypeError) as exc:
            raise HTTPException(422, str(exc)) from exc
        return predictions(await self.classify(pairs), self._labels)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--wait-ms", type=float, default=5.0)
    parser.add_argument("--temp-dir", type=Path, default=Path("/tmp/polyprobe-bench-ray"))
    args = parser.parse_args()
    # A fresh local cluster of our own, never one that happens to be running on this machine.
    # Ray gives its raylet a fixed 30 s to register, which a busy 2-core machine can miss: retry.
    for attempt in range(1, 4):
        try:
            ray.init(
                address="local",
                num_cpus=os.cpu_count(),
                include_dashboard=False,
                log_to_driver=False,
                _node_ip_address="127.0.0.1",
                _temp_dir=str(args.temp_dir),
            )
            break
        except Exception as exc:  # Ray raises a bare Exception for a slow start
            print(f"ray.init attempt {attempt} failed: {exc}", flush=True)
            ray.shutdown()
            if attempt == 3:
                raise
    node_ip = ray.util.get_node_ip_address()
    if not node_ip.startswith("127."):
        raise SystemExit(
            f"Ray chose {node_ip}; run with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 to keep it on loopback"
        )
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    serve.run(
        OnnxClassifier.options(ray_actor_options={"num_cpus": 1}).bind(
            str(args.bundle), args.threads, args.max_batch, args.wait_ms
        ),
        route_prefix="/",
    )
    print(f"ray serve listening on 127.0.0.1:{args.port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
