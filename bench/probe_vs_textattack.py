"""Perturbed inputs evaluated per second: polyprobe's probe endpoint against TextAttack.

Both sides attack the same ONNX model (a bundle's model.onnx with its tokenizer.json) on the same
real PAWS-X dev pairs (read from ../shared/data) with the same per-input query budget:

- polyprobe: `polyprobe serve` in a subprocess, then `POST /v1/models/{model}/probe` with
  `"family": "attack"` and DeepWordBug's four character edits (swap, substitute, delete, insert;
  one candidate each per word), and, for the throughput of sampled families, a probe of five
  character/keyboard families x 10 samples.
- TextAttack (>= 0.3.11, in its own venv): the DeepWordBug recipe's components (the same four
  character transformations, one random candidate each, greedy word swap with "unk" leave-one-out
  importance, untargeted goal with `query_budget`, edit distance and repeat constraints; no
  stopword constraint, as the probe attacks stopwords too) over a local `ModelWrapper` that runs the same ONNX session and tokenizer. Nothing is
  downloaded. Each example's ground truth is set to the model's clean prediction, so TextAttack
  attacks every input (it skips misclassified ones otherwise), as the probe does.

Throughput = model queries (perturbed inputs the model evaluated, the clean one included) per
wall-clock second of the attack itself; model loading and TextAttack's import are not counted.

    python bench/probe_vs_textattack.py --model-repo models --model demo \
        --textattack-python /work/venvs/textattack/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "pawsx" / "dev"
DEEPWORDBUG_EDITS = ["char_swap", "char_substitute", "char_delete", "char_insert"]
SAMPLED_FAMILIES = ["char_swap", "char_delete", "char_insert", "keyboard_typo", "homoglyph"]
_LISTENING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


def read_inputs(langs: Sequence[str], per_lang: int) -> list[dict[str, str]]:
    inputs = []
    for lang in langs:
        lines = (SHARED / f"{lang}.jsonl").read_text(encoding="utf-8").splitlines()[:per_lang]
        for line in lines:
            row = json.loads(line)
            inputs.append(
                {
                    "id": f"{lang}-{row['id']}",
                    "text": row["sentence1"],
                    "text_pair": row["sentence2"],
                    "lang": lang,
                }
            )
    return inputs


def bundle_dir(repo: Path, model: str) -> Path:
    versions = sorted(p for p in (repo / model).iterdir() if (p / "bundle.json").is_file())
    if not versions:
        raise SystemExit(f"no bundle under {repo / model}: build one with polyprobe demo-bundle")
    return versions[-1]


@contextmanager
def server(repo: Path) -> Iterator[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYPROBE_")}
    env["POLYPROBE_MAX_PROBE_EVALUATIONS"] = "1000000"
    env["POLYPROBE_MAX_PROBE_INPUTS"] = "100000"
    process = subprocess.Popen(
        [sys.executable, "-m", "polyprobe", "serve", "--model-repo", str(repo), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    port: list[int] = []

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            match = _LISTENING.search(line)
            if match:
                port.append(int(match.group(1)))

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + 300
    while not port:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit("polyprobe serve did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port[0]}"
    finally:
        process.terminate()
        process.wait(timeout=60)


def timed_probe(url: str, model: str, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    import httpx

    with httpx.Client(base_url=url, timeout=3600) as client:
        start = time.perf_counter()
        response = client.post(f"/v1/models/{model}/probe", json=body)
        seconds = time.perf_counter() - start
    response.raise_for_status()
    report: dict[str, Any] = response.json()
    return seconds, report


def run_probe(args: argparse.Namespace, inputs: list[dict[str, str]]) -> dict[str, Any]:
    attack = {
        "inputs": inputs,
        "perturbations": [
            {
                "family": "attack",
                "severity": 1.0,
                "query_budget": args.budget,
                "edits": DEEPWORDBUG_EDITS,
            }
        ],
        "seed": 0,
    }
    sampled = {
        "inputs": inputs,
        "perturbations": [
            {"family": f, "severity": 0.1, "samples": args.samples} for f in SAMPLED_FAMILIES
        ],
        "seed": 0,
    }
    out: dict[str, Any] = {}
    with server(args.model_repo) as url:
        timed_probe(url, args.model, {**attack, "inputs": inputs[:2]})  # warm-up, not counted
        runs = [timed_probe(url, args.model, attack) for _ in range(args.repeats)]
        seconds = statistics.median(s for s, _ in runs)
        report = runs[0][1]["attacks"][0]
        queries = sum(r["queries"] for r in report["results"])
        out["attack"] = {
            "seconds": [round(s, 3) for s, _ in runs],
            "queries": queries,
            "queries_per_s": queries / seconds,
            "success_rate": report["overall"]["success_rate"],
            "queries_per_input": report["overall"]["queries_per_input"],
            "words_changed": report["overall"]["words_changed"],
            "by_language": {
                g["group"]: round(g["success_rate"]["estimate"], 3) for g in report["by_language"]
            },
        }
        runs = [timed_probe(url, args.model, sampled) for _ in range(args.repeats)]
        seconds = statistics.median(s for s, _ in runs)
        counts = runs[0][1]["evaluations"]
        evaluated = counts["clean"] + counts["perturbed"]
        out["sampled"] = {
            "seconds": [round(s, 3) for s, _ in runs],
            "evaluated": evaluated,
            "noop": counts["noop"],
            "evaluated_per_s": evaluated / seconds,
        }
    return out


def run_textattack_worker(args: argparse.Namespace) -> None:
    """In the TextAttack venv: attack `args.inputs` with the DeepWordBug recipe's components."""
    import numpy as np
    import onnxruntime as ort
    import textattack
    from textattack.constraints.overlap import LevenshteinEditDistance
    from textattack.constraints.pre_transformation import RepeatModification
    from textattack.goal_functions import UntargetedClassification
    from textattack.models.wrappers import ModelWrapper
    from textattack.search_methods import GreedyWordSwapWIR
    from textattack.transformations import (
        CompositeTransformation,
        WordSwapNeighboringCharacterSwap,
        WordSwapRandomCharacterDeletion,
        WordSwapRandomCharacterInsertion,
        WordSwapRandomCharacterSubstitution,
    )

    from export.bundle import BundleManifest
    from export.features import BundleTokenizer

    bundle = bundle_dir(args.model_repo, args.model)
    manifest = BundleManifest.model_validate_json((bundle / "bundle.json").read_text("utf-8"))
    fp32 = next(m for m in manifest.models if m.precision == "fp32")
    tokenizer = BundleTokenizer.from_file(
        bundle / "tokenizer.json",
        max_length=manifest.max_sequence_length,
        input_names=manifest.inputs,
    )
    options = ort.SessionOptions()  # as the service sets it up (service/backend.py)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = len(os.sched_getaffinity(0))
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(bundle / fp32.path), options, ["CPUExecutionProvider"])

    class OnnxPairClassifier(ModelWrapper):  # type: ignore[misc]
        def __init__(self) -> None:
            self.model = session
            self.calls = 0

        def __call__(self, text_input_list: list[tuple[str, str]]) -> np.ndarray:
            self.calls += 1
            batch = tokenizer.encode([(a, b) for a, b in text_input_list])
            (logits,) = session.run(None, batch.feeds)
            shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
            return shifted / shifted.sum(axis=1, keepdims=True)

    wrapper = OnnxPairClassifier()
    pairs = [(i["text"], i["text_pair"]) for i in json.loads(args.inputs.read_text("utf-8"))]
    clean = wrapper(pairs).argmax(axis=1)
    dataset = textattack.datasets.Dataset(
        [((a, b), int(label)) for (a, b), label in zip(pairs, clean, strict=True)],
        input_columns=("premise", "hypothesis"),
    )
    goal = UntargetedClassification(
        wrapper, query_budget=args.budget, model_batch_size=args.batch_size
    )
    transformation = CompositeTransformation(
        [
            WordSwapNeighboringCharacterSwap(),
            WordSwapRandomCharacterSubstitution(),
            WordSwapRandomCharacterDeletion(),
            WordSwapRandomCharacterInsertion(),
        ]
    )
    constraints = [LevenshteinEditDistance(30), RepeatModification()]
    attack = textattack.Attack(goal, constraints, transformation, GreedyWordSwapWIR("unk"))
    attack_args = textattack.AttackArgs(
        num_examples=len(pairs), random_seed=0, disable_stdout=True, silent=True
    )
    attacker = textattack.Attacker(attack, dataset, attack_args)
    start = time.perf_counter()
    results = attacker.attack_dataset()
    seconds = time.perf_counter() - start
    queries = sum(r.num_queries for r in results)
    kinds = [type(r).__name__ for r in results]
    print(
        json.dumps(
            {
                "textattack_version": _version("textattack"),
                "seconds": round(seconds, 3),
                "queries": int(queries),
                "queries_per_s": queries / seconds,
                "model_calls": wrapper.calls,
                "results": {k: kinds.count(k) for k in sorted(set(kinds))},
                "success_rate": kinds.count("SuccessfulAttackResult") / len(kinds),
            }
        )
    )


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def run_textattack(args: argparse.Namespace, inputs: list[dict[str, str]]) -> dict[str, Any]:
    path = Path(os.environ.get("TMPDIR", "/tmp")) / "probe_vs_textattack_inputs.json"
    path.write_text(json.dumps(inputs, ensure_ascii=False), "utf-8")
    command = [
        str(args.textattack_python),
        str(Path(__file__).resolve()),
        "--textattack-worker",
        "--inputs", str(path),
        "--model-repo", str(args.model_repo),
        "--model", args.model,
        "--budget", str(args.budget),
        "--batch-size", str(args.batch_size),
    ]  # fmt: skip
    # `import textattack` builds a stopword constraint from NLTK's corpus, which cannot be
    # downloaded offline; an empty English list lets it import (the attack here uses none).
    nltk_data = path.parent / "probe_vs_textattack_nltk"
    (nltk_data / "corpora" / "stopwords").mkdir(parents=True, exist_ok=True)
    (nltk_data / "corpora" / "stopwords" / "english").write_text("", "utf-8")
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "TOKENIZERS_PARALLELISM": "false",
        "NLTK_DATA": str(nltk_data),
    }
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"TextAttack run failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-repo", type=Path, default=REPO / "models")
    parser.add_argument("--model", default="demo")
    parser.add_argument("--langs", default="en,de,es,fr", help="PAWS-X dev languages")
    parser.add_argument("--per-lang", type=int, default=10, help="inputs per language")
    parser.add_argument("--budget", type=int, default=100, help="model queries per input")
    parser.add_argument("--samples", type=int, default=10, help="sampled families: samples")
    parser.add_argument("--repeats", type=int, default=3, help="probe runs (median taken)")
    parser.add_argument("--batch-size", type=int, default=256, help="TextAttack model batch")
    parser.add_argument(
        "--textattack-python", type=Path, default=Path("/work/venvs/textattack/bin/python")
    )
    parser.add_argument("--textattack-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--inputs", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--skip-textattack", action="store_true")
    args = parser.parse_args()
    args.model_repo = args.model_repo.resolve()
    if args.textattack_worker:
        run_textattack_worker(args)
        return
    inputs = read_inputs(args.langs.split(","), args.per_lang)
    load = os.getloadavg()
    results: dict[str, Any] = {
        "inputs": len(inputs),
        "langs": args.langs,
        "budget": args.budget,
        "cores": len(os.sched_getaffinity(0)),
        "loadavg_before": [round(x, 2) for x in load],
        "probe": run_probe(args, inputs),
    }
    if not args.skip_textattack:
        results["textattack"] = run_textattack(args, inputs)
        results["speedup_attack"] = (
            results["probe"]["attack"]["queries_per_s"] / results["textattack"]["queries_per_s"]
        )
        results["speedup_sampled"] = (
            results["probe"]["sampled"]["evaluated_per_s"] / results["textattack"]["queries_per_s"]
        )
    results["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(results, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
