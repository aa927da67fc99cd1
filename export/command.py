"""`polyprobe export`: its arguments and what it prints. Heavy imports wait until it runs."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from export.bundle import Precision

INSTALL_EXPORT_HINT = (
    "building a bundle needs the export extra: pip install torch==2.13.0 && "
    "pip install 'polyprobe[export]' (install the pinned torch first; a bare torch pulls CUDA)"
)
PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "int8")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="checkpoint directory (with tokenizer.json)")
    parser.add_argument(
        "--out", type=Path, required=True, help="bundle directory, e.g. models/name/1"
    )
    parser.add_argument(
        "--precision",
        default="fp32",
        help="comma list of variants: fp32 (always), fp16 (for CUDA), int8 (for CPU)",
    )
    optimize = parser.add_mutually_exclusive_group()
    optimize.add_argument(
        "--optimize",
        choices=["O1", "O2", "O3"],
        default="O2",
        help="ORT optimiser level for the fp32 graph: O1 basic rewrites, O2 (default) plus "
        "transformer fusions, O3 plus approximate GELU",
    )
    optimize.add_argument(
        "--no-optimize", action="store_true", help="keep the plain fp32 export as is"
    )
    parser.add_argument(
        "--parity-data",
        action="append",
        default=[],
        metavar="FILE.jsonl[,FILE...]",
        help="JSONL files, one language each (e.g. ../shared/data/pawsx/dev/de.jsonl); "
        "default: the built-in 12-pair sample",
    )
    parser.add_argument(
        "--parity-dir", type=Path, help="use every *.jsonl in this folder as --parity-data"
    )
    parser.add_argument(
        "--parity-ids", default=None, help="id range to draw from (default: 1500-1999, held out)"
    )
    parser.add_argument(
        "--parity-per-language", type=int, default=None, help="inputs per language (default 100)"
    )
    parser.add_argument(
        "--gate",
        action="append",
        default=[],
        metavar="GATE.FIELD=VALUE",
        help="override a parity gate, e.g. int8.max_accuracy_drop=0.02 (gates: fp32, fp32-O3, "
        "fp16, int8; fields: max_abs_logit_diff, min_argmax_agreement, max_accuracy_drop)",
    )
    parser.add_argument(
        "--quantize-word-embeddings",
        action="store_true",
        help="int8 also for the word-embedding table (kept fp32 by default)",
    )
    parser.add_argument(
        "--external-data-threshold",
        type=int,
        default=None,
        metavar="BYTES",
        help="graphs above this size keep weights in <file>_data (default 2000000000)",
    )
    parser.add_argument("--name", default="model", help="bundle name (default: model)")
    parser.add_argument("--version", default="1", help="bundle version (default: 1)")
    parser.add_argument(
        "--task", choices=["pair-classification", "classification"], default="pair-classification"
    )
    parser.add_argument(
        "--target-task",
        default=None,
        help="provenance: what it was trained for (default: the run's)",
    )


def _precisions(spec: str) -> set[str]:
    precisions = {p.strip() for p in spec.split(",") if p.strip()}
    unknown = sorted(precisions - set(PRECISIONS))
    if unknown or "fp32" not in precisions:
        raise ValueError(f"--precision takes fp32 (always) plus fp16 and/or int8, got {spec!r}")
    return precisions


def _parity_files(args: argparse.Namespace) -> list[Path]:
    files = [Path(f) for spec in args.parity_data for f in spec.split(",") if f.strip()]
    if args.parity_dir is not None:
        found = sorted(args.parity_dir.glob("*.jsonl"))
        if not found:
            raise ValueError(f"--parity-dir {args.parity_dir} holds no *.jsonl files")
        files += found
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ValueError(f"parity data not found: {', '.join(missing)}")
    if not files and (args.parity_ids or args.parity_per_language):
        raise ValueError("--parity-ids/--parity-per-language need --parity-data or --parity-dir")
    return files


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        from export.build import ExportOptions, ParityError, export_bundle, read_checkpoint_info
        from export.parity import (
            DEFAULT_GATES,
            DEFAULT_PARITY_IDS,
            DEFAULT_PARITY_PER_LANGUAGE,
            builtin_sample,
            override_gates,
            read_jsonl_sample,
        )
        from export.provenance import read_provenance, read_training_evaluation
        from export.variants import EXTERNAL_DATA_THRESHOLD
        from polyprobe.ids import parse_id_range
    except ImportError as exc:
        print(f"polyprobe: {INSTALL_EXPORT_HINT} (missing: {exc.name})", file=sys.stderr)
        return 2
    try:
        precisions = _precisions(args.precision)
        files = _parity_files(args)
        gates = override_gates(DEFAULT_GATES, args.gate)
        if not (args.checkpoint / "config.json").is_file():
            raise ValueError(f"{args.checkpoint} is not a checkpoint (no config.json)")
        labels = read_checkpoint_info(args.checkpoint).labels
        sample = (
            read_jsonl_sample(
                files,
                labels,
                ids=parse_id_range(args.parity_ids or DEFAULT_PARITY_IDS),
                per_language=args.parity_per_language or DEFAULT_PARITY_PER_LANGUAGE,
            )
            if files
            else builtin_sample()
        )
        options = ExportOptions(
            optimize=None if args.no_optimize else args.optimize,
            fp16="fp16" in precisions,
            int8="int8" in precisions,
            keep_word_embeddings_fp32=not args.quantize_word_embeddings,
            gates=gates,
            external_data_threshold=args.external_data_threshold or EXTERNAL_DATA_THRESHOLD,
        )
    except (ValueError, OSError) as exc:
        print(f"polyprobe export: {exc}", file=sys.stderr)
        return 2
    source = str(args.checkpoint)
    try:
        result = export_bundle(
            args.checkpoint,
            args.out,
            name=args.name,
            version=args.version,
            task=args.task,
            provenance=read_provenance(
                args.checkpoint, source=source, target_task=args.target_task
            ),
            parity_sample=sample,
            evaluation=read_training_evaluation(args.checkpoint, args.target_task),
            options=options,
        )
    except (ParityError, ValueError, OSError) as exc:
        print(f"polyprobe export: {exc}", file=sys.stderr)
        return 1
    manifest = result.manifest
    print(f"exported with {manifest.provenance.exporter}; parity sample: {sample.description}")
    for model in manifest.models:
        size = model.size_bytes + sum(f.size_bytes for f in model.external_data)
        external = f" + {', '.join(f.path for f in model.external_data)}" * bool(
            model.external_data
        )
        parity = model.parity
        check = (
            f"max |logit diff| {parity.max_abs_logit_diff:.2e}, argmax agreement "
            f"{parity.argmax_agreement:.3f}"
            if parity
            else "no parity report"
        )
        print(f"{model.precision}: {model.path}{external} ({size} bytes), {check}")
        for lang, r in sorted((parity.per_language if parity else {}).items()):
            delta = r.get("accuracy_delta")
            accuracy = "" if delta is None else f", accuracy {delta * 100:+.1f} points"
            print(
                f"  {lang}: n {int(r['n'])}, max |diff| {r['max_abs_logit_diff']:.2e}, "
                f"agreement {r['argmax_agreement']:.3f}{accuracy}"
            )
    for rejected in result.rejected:
        print(f"not written: {rejected.reason}")
    print(f"wrote bundle {manifest.name}/{manifest.version} to {args.out}")
    return 0
