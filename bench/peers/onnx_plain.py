"""Peer 2: the same ONNX model and tokenizer as polyprobe behind a plain FastAPI handler.

One ONNX Runtime session, tuned like polyprobe's (all graph optimisations, intra-op threads =
cores), run once per request on that request's inputs: no batching across requests, so the gap
to polyprobe is what dynamic batching and the engine buy.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import onnxruntime as ort
import uvicorn
from common import bundle_files, pairs_of, predictions
from fastapi import FastAPI, HTTPException

from export.features import BundleTokenizer


def build_app(bundle_dir: Path, threads: int) -> FastAPI:
    files = bundle_files(bundle_dir)
    tokenizer = BundleTokenizer.from_file(
        files.tokenizer, max_length=files.max_length, input_names=files.input_names
    )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(
        str(files.model), sess_options=options, providers=["CPUExecutionProvider"]
    )
    app = FastAPI()

    @app.post("/v1/models/{model}/predict")
    def predict(model: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            pairs = pairs_of(body)
        except (ValueError, KeyError, TypeError) as exc:
            raise HTTPException(422, str(exc)) from exc
        (logits,) = session.run(["logits"], tokenizer.encode(pairs).feeds)
        return predictions(logits, files.labels)

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    app = build_app(args.bundle, args.threads)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
