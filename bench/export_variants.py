"""Size, CPU throughput and per-language accuracy change of each export variant.

For an XLM-R-base-shaped classifier (random weights: only speed, size and parity mean anything) and
the e5-small-based classifier (the real multilingual-e5-small encoder from `polyprobe base-model
e5-small`, with a freshly initialised, untrained head unless --e5-checkpoint points at a trained
one). Variants: plain fp32, optimised fp32 (ORT transformer optimiser, O2), dynamic int8 of the
optimised graph (word embeddings fp32), fp16 of the optimised graph (parity only: it is a CUDA
variant, its CPU speed means nothing). Throughput is pairs/s with ORT's CPU provider, all graph
optimisations on, as the service runs it, at PAWS-X lengths (real pairs) and at 128 tokens.

    nice -n 10 python bench/export_variants.py --models e5-small xlmr-base --out /tmp/bench-export

Writes results.json under --out and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from export.build import read_checkpoint_info
from export.onnx_export import export_sequence_classifier
from export.parity import (
    CHUNK_SIZE,
    DEFAULT_GATES,
    ParitySample,
    compare,
    encode_sample,
    onnx_logits,
    read_jsonl_sample,
    reference_logits,
)
from export.variants import convert_fp16, onnx_bytes, optimize_fp32, quantize_int8, read_model_shape
from polyprobe.ids import parse_id_range

SHARED_PAWSX = Path(__file__).resolve().parents[2] / "shared" / "data" / "pawsx" / "dev"
LABELS = ["not_paraphrase", "paraphrase"]


def make_checkpoint(kind: str, e5_dir: Path, e5_checkpoint: Path | None, out: Path) -> Path:
    """A sequence-classification checkpoint with XLM-R's real 250k-piece tokenizer."""
    import shutil

    import torch
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    if kind == "e5-small" and e5_checkpoint is not None:
        return e5_checkpoint
    target = out / kind / "checkpoint"
    # The tokenizer is written last: a build that stopped before it is built again.
    if (target / "tokenizer.json").is_file():
        return target
    torch.manual_seed(0)
    labels = {"id2label": dict(enumerate(LABELS)), "label2id": {k: i for i, k in enumerate(LABELS)}}
    if kind == "e5-small":
        model = XLMRobertaForSequenceClassification.from_pretrained(e5_dir, **labels)
    else:
        config = XLMRobertaConfig(
            vocab_size=250002,
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            max_position_embeddings=514,
            type_vocab_size=1,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            **labels,
        )
        model = XLMRobertaForSequenceClassification(config)
    model.save_pretrained(target)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copyfile(e5_dir / name, target / name)
    return target


def build_variants(checkpoint: Path, work: Path, wanted: list[str]) -> dict[str, Path]:
    work.mkdir(parents=True, exist_ok=True)
    paths = {
        "fp32": work / "model.onnx",
        "fp32-O2": work / "model.optimized.onnx",
        "int8": work / "model.int8.onnx",
        "fp16": work / "model.fp16.onnx",
    }
    if not paths["fp32"].exists():
        export_sequence_classifier(checkpoint, paths["fp32"])
    big = onnx_bytes(paths["fp32"]) > 2_000_000_000
    if not paths["fp32-O2"].exists():
        optimize_fp32(
            paths["fp32"], paths["fp32-O2"], read_model_shape(checkpoint), "O2", external=big
        )
    if not paths["int8"].exists():
        quantize_int8(paths["fp32-O2"], paths["int8"], keep_word_embeddings_fp32=True, external=big)
    if "fp16" in wanted and not paths["fp16"].exists():
        convert_fp16(paths["fp32-O2"], paths["fp16"], external=big)
    return paths


def session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def throughput(sess: Any, batches: list[dict[str, np.ndarray]], seconds: float) -> float:
    """Pairs per second over repeated passes through `batches` (after one warm-up pass)."""
    names = {i.name for i in sess.get_inputs()}
    feeds = [{k: v for k, v in b.items() if k in names} for b in batches]
    for f in feeds[:2]:
        sess.run(None, f)
    done, start = 0, time.perf_counter()
    while True:
        for f in feeds:
            sess.run(None, f)
            done += len(f["input_ids"])
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


def fixed_length_batches(
    batch: int, length: int, count: int, vocab: int
) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        ids = rng.integers(5, vocab, size=(batch, length), dtype=np.int64)
        ids[:, 0], ids[:, -1] = 0, 2
        out.append({"input_ids": ids, "attention_mask": np.ones_like(ids)})
    return out


def run_model(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    checkpoint = make_checkpoint(kind, args.e5_dir, args.e5_checkpoint, args.out)
    paths = build_variants(checkpoint, args.out / kind / "onnx", args.variants)
    info = read_checkpoint_info(checkpoint)
    files = sorted(SHARED_PAWSX.glob("*.jsonl"))
    sample: ParitySample = read_jsonl_sample(
        files, info.labels, ids=parse_id_range(args.ids), per_language=args.per_language
    )
    names = ["input_ids", "attention_mask"]
    encoded = encode_sample(sample, checkpoint / "tokenizer.json", info.max_sequence_length, names)
    t0 = time.perf_counter()
    reference, reference_name = reference_logits(checkpoint, encoded)
    result: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "sample": sample.description,
        "reference_seconds": time.perf_counter() - t0,
        "variants": {},
    }
    # PAWS-X lengths: ~128 of the sample's pairs over all languages, in length-sorted batches of 32
    # (the service's batcher sorts by length too).
    traffic = ParitySample(
        sample.description, sample.examples[:: max(1, len(sample.examples) // 128)]
    )
    pairs_batches = list(
        encode_sample(
            traffic, checkpoint / "tokenizer.json", info.max_sequence_length, names
        ).chunks
    )
    lengths = [int(b["attention_mask"].sum(1).mean()) for b in pairs_batches]
    vocab = json.loads((checkpoint / "config.json").read_text())["vocab_size"]
    fixed = fixed_length_batches(CHUNK_SIZE, 128, 4, vocab)
    for name, path in paths.items():
        if name not in args.variants:
            continue
        gate = DEFAULT_GATES["fp32" if name.startswith("fp32") else name]  # type: ignore[index]
        t0 = time.perf_counter()
        parity = compare(
            onnx_logits(path, encoded), reference, sample, gate, reference_name=reference_name
        )
        entry: dict[str, Any] = {
            "bytes": onnx_bytes(path),
            "parity_seconds": time.perf_counter() - t0,
            "parity": parity.model_dump(),
        }
        if name != "fp16":
            sess = session(path, args.threads)
            entry["pairs_per_s_pawsx"] = throughput(sess, pairs_batches, args.seconds)
            entry["pairs_per_s_128"] = throughput(sess, fixed, args.seconds)
        result["variants"][name] = entry
        print(kind, name, {k: v for k, v in entry.items() if k != "parity"}, flush=True)
    result["pawsx_mean_tokens_per_batch"] = lengths
    return result


def markdown(kind: str, result: dict[str, Any]) -> str:
    variants = result["variants"]
    base = variants["fp32-O2"]
    lines = [
        f"**{kind}** ({result['checkpoint']}); accuracy sample: {result['sample']}",
        "",
        "| variant | size (MB) | pairs/s PAWS-X | pairs/s 128 tok | vs O2 (PAWS-X / 128) | "
        "max abs logit diff | argmax agreement | passed default gate |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, v in variants.items():
        p = v["parity"]
        speed = (
            f"{v['pairs_per_s_pawsx']:.1f} | {v['pairs_per_s_128']:.1f} | "
            f"{v['pairs_per_s_pawsx'] / base['pairs_per_s_pawsx']:.2f}x / "
            f"{v['pairs_per_s_128'] / base['pairs_per_s_128']:.2f}x"
            if "pairs_per_s_128" in v
            else "n/a | n/a | n/a"
        )
        lines.append(
            f"| {name} | {v['bytes'] / 1e6:.0f} | {speed} | {p['max_abs_logit_diff']:.2e} | "
            f"{p['argmax_agreement']:.3f} | {p['passed']} {'; '.join(p['failures'])} |"
        )
    langs = sorted(variants["fp32"]["parity"]["per_language"])
    lines += [
        "",
        "accuracy (%) of the PyTorch checkpoint, and change in points per variant:",
        "",
        "| language | PyTorch | " + " | ".join(variants) + " |",
        "|---|---:|" + "---:|" * len(variants),
    ]
    for lang in langs:
        ref = variants["fp32"]["parity"]["per_language"][lang]["accuracy_reference"]
        deltas = [
            f"{v['parity']['per_language'][lang]['accuracy_delta'] * 100:+.1f}"
            for v in variants.values()
        ]
        lines.append(f"| {lang} | {ref * 100:.1f} | " + " | ".join(deltas) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", choices=["e5-small", "xlmr-base"], required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--e5-dir", type=Path, default=Path("/work/cache/e5-small"))
    parser.add_argument("--e5-checkpoint", type=Path, help="a trained e5-small classifier")
    parser.add_argument("--ids", default="1500-1999")
    parser.add_argument("--per-language", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0, help="per throughput measurement")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["fp32", "fp32-O2", "int8", "fp16"],
        help="which to measure (fp16's CPU parity run is slow for base-sized models)",
    )
    args = parser.parse_args()
    results = {}
    for kind in args.models:
        results[kind] = run_model(kind, args)
        (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    for kind, result in results.items():
        print(markdown(kind, result), end="\n\n")


if __name__ == "__main__":
    main()
