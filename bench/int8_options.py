"""Which dynamic-int8 options keep a fine-tuned classifier's decisions (issue #6).

Quantizes an fp32 ONNX graph four ways (per-tensor or per-channel weights, 8-bit or 7-bit
"reduce_range" weights; 7 bits avoid the int16 saturation of AVX2's VPMADDUBSW on CPUs without
VNNI) and compares each with the PyTorch checkpoint on held-out PAWS-X pairs per language: max
|logit difference|, argmax agreement, and accuracy change in points.

    python bench/int8_options.py CHECKPOINT FP32_ONNX --out DIR [--per-language 50]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from export.parity import encode_sample, onnx_logits, read_jsonl_sample, reference_logits
from export.variants import quantize_int8

LANGUAGES = ("en", "de", "es", "fr", "ja", "ko", "zh")
LABELS = ("not_paraphrase", "paraphrase")


def compare(
    logits: np.ndarray, reference: np.ndarray, gold: np.ndarray, langs: np.ndarray
) -> dict[str, float]:
    row = {
        "max_abs_logit_diff": float(np.abs(logits - reference).max()),
        "argmax_agreement": float((logits.argmax(1) == reference.argmax(1)).mean()),
    }
    for lang in LANGUAGES:
        mask = langs == lang
        change = (logits[mask].argmax(1) == gold[mask]).mean() - (
            reference[mask].argmax(1) == gold[mask]
        ).mean()
        row[f"accuracy_change_{lang}"] = round(100 * float(change), 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("fp32_onnx", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/pawsx/dev"))
    parser.add_argument("--ids", default="1500-1999", help="held-out ids (first, last)")
    parser.add_argument("--per-language", type=int, default=50)
    args = parser.parse_args()
    first, last = (int(part) for part in args.ids.split("-"))
    args.out.mkdir(parents=True, exist_ok=True)

    sample = read_jsonl_sample(
        [args.data / f"{lang}.jsonl" for lang in LANGUAGES], LABELS,
        ids=range(first, last + 1), per_language=args.per_language,
    )  # fmt: skip
    encoded = encode_sample(
        sample, args.checkpoint / "tokenizer.json", 128, ["input_ids", "attention_mask"]
    )
    reference, _ = reference_logits(args.checkpoint, encoded)
    gold = np.array([example.label for example in sample.examples])
    langs = np.array([example.lang for example in sample.examples])

    results = {"fp32": compare(onnx_logits(args.fp32_onnx, encoded), reference, gold, langs)}
    print("fp32", json.dumps(results["fp32"]), flush=True)
    for per_channel in (False, True):
        for reduce_range in (False, True):
            name = f"int8 per_channel={per_channel} reduce_range={reduce_range}"
            target = args.out / f"int8-pc{int(per_channel)}-rr{int(reduce_range)}.onnx"
            quantize_int8(
                args.fp32_onnx, target, keep_word_embeddings_fp32=True, external=False,
                per_channel=per_channel, reduce_range=reduce_range,
            )  # fmt: skip
            results[name] = compare(onnx_logits(target, encoded), reference, gold, langs)
            print(name, json.dumps(results[name]), flush=True)
    (args.out / "results.json").write_text(
        json.dumps({"sample": sample.description, "results": results}, indent=2)
    )


if __name__ == "__main__":
    main()
