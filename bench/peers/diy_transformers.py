"""Peer 1, the do-it-yourself baseline: FastAPI + a transformers pipeline, PyTorch, per request.

What most users write first: a sync handler (FastAPI runs it in its thread pool) calling the
pipeline on the request's inputs; no batching across requests.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import uvicorn
from common import pairs_of
from fastapi import FastAPI, HTTPException
from transformers import pipeline


def build_app(checkpoint: Path) -> FastAPI:
    classify = pipeline("text-classification", model=str(checkpoint), device="cpu", top_k=None)
    app = FastAPI()

    @app.post("/v1/models/{model}/predict")
    def predict(model: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            pairs = pairs_of(body)
        except (ValueError, KeyError, TypeError) as exc:
            raise HTTPException(422, str(exc)) from exc
        outputs = classify(
            [{"text": text, "text_pair": pair} for text, pair in pairs], truncation=True
        )
        return {
            "predictions": [
                {
                    "label": max(scores, key=lambda s: s["score"])["label"],
                    "probabilities": {s["label"]: s["score"] for s in scores},
                }
                for scores in outputs
            ]
        }

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(build_app(args.checkpoint), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
