"""A recipe end to end, per seed: intermediate phase -> target phase -> zero-shot evaluation.

Layout of `output_dir`:
  recipe.yaml                     the recipe as given, plus the resolved config in each manifest
  train.log                       the log of every run into this directory
  seed-<s>/intermediate/          encoder after the intermediate phase, phase.json, resume.pt
  seed-<s>/target/resume.pt       resume state of the target phase
  seed-<s>/checkpoint/            XLMRobertaForSequenceClassification + tokenizer + polyprobe_run.json
  seed-<s>/metrics.json, metrics.png, predictions.jsonl
  summary.json                    per-language mean and spread over every finished seed
A seed whose metrics.json exists is skipped (if it ran with the same config; otherwise the run
stops with an error), and an interrupted phase resumes from its last evaluation, so re-running
the same command finishes an interrupted run.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from transformers import PreTrainedModel

from training.evaluate import Prediction, plot_languages, write_predictions, zero_shot_metrics
from training.kinds import check_target_task, get_kind
from training.loop import (
    Distributed,
    PhaseData,
    PhaseResult,
    init_distributed,
    predict,
    train_phase,
)
from training.manifest import git_state, library_versions
from training.model import (
    ADAPTERS_DIR,
    RUN_MANIFEST,
    add_lora,
    build_model,
    freeze_word_embeddings,
    load_encoder,
    load_tokenizer,
    merge_lora,
    save_adapter,
    save_classifier,
    save_encoder,
)
from training.recipe import Phase, Recipe, RecipeError
from training.splits import check_loaded, check_recipe, compress_ids
from training.tasks import Example, TaskSpec, get_task, load_examples

logger = logging.getLogger(__name__)

E5_ALIAS = "e5-small"
EVAL_SEED = 20260101


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "polyprobe" / "base-models"


def resolve_base_model(name: str, cache_dir: Path | None = None) -> str:
    """`e5-small` is the offline multilingual-e5-small (converted once, cached); anything else is
    a Hugging Face id or a local checkpoint directory."""
    if name != E5_ALIAS:
        return name
    from training.base_models import convert_e5_small

    return str(convert_e5_small((cache_dir or default_cache_dir()) / E5_ALIAS))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class SeedRun:
    seed: int
    run_dir: Path
    metrics: dict[str, Any]
    skipped: bool


class _DataIds:
    """Every id each phase read, by corpus, for the manifest and the leakage guard."""

    def __init__(self) -> None:
        self.by_phase: dict[str, dict[str, dict[str, str]]] = {}
        self.by_corpus: dict[str, set[int]] = {}

    def record(
        self, phase: str, task: str, part: str, key: str, examples: Sequence[Example]
    ) -> None:
        per_lang: dict[str, list[int]] = {}
        for e in examples:
            per_lang.setdefault(e.lang, []).append(e.id)
        self.by_phase.setdefault(phase, {})[f"{task}.{part}"] = {
            "corpus": key,
            **{lang: compress_ids(ids) for lang, ids in sorted(per_lang.items())},
        }
        self.by_corpus.setdefault(key, set()).update(e.id for e in examples)


def _phase_data(phase: Phase, name: str, ids: _DataIds) -> PhaseData:
    specs: dict[str, TaskSpec] = {}
    train: dict[str, list[Example]] = {}
    dev: dict[str, list[Example]] = {}
    for task in phase.tasks:
        spec = get_task(task.task)
        kind = get_kind(spec.kind)
        specs[task.task] = spec
        train[task.task] = load_examples(spec, task.train, kind.parse)
        ids.record(name, task.task, "train", task.train.corpus_key(), train[task.task])
        if task.dev is not None:
            dev[task.task] = load_examples(spec, task.dev, kind.parse)
            ids.record(name, task.task, "dev", task.dev.corpus_key(), dev[task.task])
    return PhaseData(specs, train, dev)


def _configure_logging(output_dir: Path, env: Distributed) -> None:
    if not env.is_main:
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(output_dir / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    if not any(
        isinstance(h, logging.FileHandler) and h.baseFilename == handler.baseFilename
        for h in root.handlers
    ):
        root.addHandler(handler)
    root.setLevel(logging.INFO)


def _barrier(env: Distributed) -> None:
    if env.enabled:
        dist.barrier()


def run_recipe(recipe: Recipe, resolved: Mapping[str, Any], *, recipe_text: str) -> list[SeedRun]:
    # The code this process imported, taken before the first seed: the checkout may move on while
    # a long run trains, and later seeds still run the code imported now.
    code = git_state(Path(__file__).resolve().parent)
    check_target_task(recipe.target.tasks[0].task)
    env = init_distributed()
    notes = check_recipe(recipe)
    _configure_logging(recipe.output_dir, env)
    if env.is_main:
        (recipe.output_dir / "recipe.yaml").write_text(recipe_text, encoding="utf-8")
    base_model = resolve_base_model(recipe.base_model) if env.is_main else recipe.base_model
    if env.enabled:
        shared: list[Any] = [base_model]
        dist.broadcast_object_list(shared, src=0)
        base_model = shared[0]
    logger.info(
        "recipe %s, base model %s, world size %d, device %s",
        recipe.name,
        base_model,
        env.world_size,
        env.device,
    )
    runs = [
        _run_seed(recipe, resolved, base_model, seed, env, notes, code) for seed in recipe.seeds
    ]
    if env.is_main:
        summarise_seeds(recipe, runs)
    return runs


def _run_seed(
    recipe: Recipe,
    resolved: Mapping[str, Any],
    base_model: str,
    seed: int,
    env: Distributed,
    notes: list[str],
    code: Mapping[str, Any],
) -> SeedRun:
    run_dir = recipe.output_dir / f"seed-{seed}"
    metrics_path = run_dir / "metrics.json"
    if metrics_path.is_file():
        check_same_config(recipe, run_dir / "checkpoint" / RUN_MANIFEST)
        logger.info("seed %d already finished (%s): skipped", seed, metrics_path)
        return SeedRun(seed, run_dir, json.loads(metrics_path.read_text()), skipped=True)
    started = time.time()
    seed_everything(seed)
    ids = _DataIds()
    tokenizer = load_tokenizer(base_model)
    phases: dict[str, PhaseResult | dict[str, Any]] = {}
    encoder_source = base_model
    if recipe.intermediate is not None:
        encoder_source, phases["intermediate"] = _intermediate(
            recipe.intermediate, base_model, recipe.lora_rank, tokenizer, seed, env, run_dir, ids
        )
    target_task = recipe.target.tasks[0].task
    target_data = _phase_data(recipe.target, "target", ids)
    evaluation = recipe.evaluation.data
    spec = target_data.specs[target_task]
    eval_examples = load_examples(spec, evaluation, get_kind(spec.kind).parse)
    check_loaded(ids.by_corpus, evaluation.corpus_key(), (e.id for e in eval_examples))
    ids.record("evaluation", target_task, "eval", evaluation.corpus_key(), eval_examples)
    seed_everything(seed)
    encoder = _trainable_encoder(encoder_source, recipe.target, recipe.lora_rank)
    model = build_model(encoder, target_data.specs)
    phases["target"] = train_phase(
        model,
        tokenizer,
        recipe.target,
        target_data,
        seed=seed,
        env=env,
        work_dir=run_dir / "target",
        label=f"seed {seed} target {target_task}",
    )
    adapter = merge_lora(model)
    metrics: dict[str, Any] = {}
    if env.is_main:
        if adapter is not None and recipe.lora_rank is not None:
            save_adapter(
                adapter,
                run_dir / ADAPTERS_DIR,
                "target",
                recipe.lora_rank,
                model.heads[target_task],
            )
        model.to(env.device)
        raw = predict(
            model, target_task, spec, eval_examples, tokenizer, recipe.target.max_length, env.device
        )
        predictions = [
            Prediction(e.id, e.lang, int(e.label), int(p))
            for e, p in zip(eval_examples, raw, strict=True)
        ]
        majority = Counter(int(e.label) for e in target_data.train[target_task]).most_common(1)[0][
            0
        ]
        metrics = {
            "task": target_task,
            "recipe": recipe.name,
            "seed": seed,
            "stilts": recipe.is_stilts,
            "zero_shot": not notes,
            "notes": notes,
            "selection": f"{recipe.target.selection} on {', '.join(target_data.dev) or 'no dev set'} (English dev)"
            if recipe.target.selection == "best_dev"
            else "last step",
            "majority_label": spec.labels[majority],
            "evaluation_ids": ids.by_phase["evaluation"][f"{target_task}.eval"],
            **zero_shot_metrics(predictions, spec.labels, majority_label=majority, seed=EVAL_SEED),
        }
        run_dir.mkdir(parents=True, exist_ok=True)
        write_predictions(run_dir / "predictions.jsonl", predictions)
        plot_languages(
            metrics,
            f"{recipe.name} seed {seed}: zero-shot {target_task} accuracy",
            run_dir / "metrics.png",
        )
        manifest = {
            "recipe_name": recipe.name,
            "recipe": resolved,
            "config": recipe.model_dump(mode="json"),
            "seed": seed,
            "base_model": base_model,
            "data_ids": ids.by_phase,
            "phases": {
                k: (v.to_json() if isinstance(v, PhaseResult) else v) for k, v in phases.items()
            },
            "world_size": env.world_size,
            "device": str(env.device),
            # Float sums depend on how many threads split them: runs that differ only here can
            # disagree on a few held-out pairs.
            "intra_op_threads": torch.get_num_threads(),
            "libraries": library_versions(),
            "git": code,
            "metrics": "metrics.json",
            "labels": list(spec.labels),
            "task": target_task,
            "started": started,
            "finished": time.time(),
            "notes": notes,
        }
        save_classifier(model, target_task, spec, tokenizer, run_dir / "checkpoint", manifest)
        (run_dir / "checkpoint" / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
        logger.info(
            "seed %d: %s",
            seed,
            {k: v["accuracy"]["estimate"] for k, v in metrics["languages"].items()},
        )
    _barrier(env)
    return SeedRun(seed, run_dir, metrics, skipped=False)


def _trainable_encoder(source: str, phase: Phase, lora_rank: int | None) -> PreTrainedModel:
    """The encoder a phase trains: in full (optionally with frozen word embeddings), or frozen
    under fresh LoRA adapters when the recipe sets `lora_rank`."""
    encoder = load_encoder(source)
    if lora_rank is not None:
        return add_lora(encoder, lora_rank)
    if phase.freeze_word_embeddings:
        freeze_word_embeddings(encoder)
    return encoder


def _intermediate(
    phase: Phase,
    base_model: str,
    lora_rank: int | None,
    tokenizer: Any,
    seed: int,
    env: Distributed,
    run_dir: Path,
    ids: _DataIds,
) -> tuple[str, PhaseResult | dict[str, Any]]:
    """Train (or reuse a finished) intermediate phase; returns the encoder directory."""
    out = run_dir / "intermediate"
    data = _phase_data(phase, "intermediate", ids)
    done = out / "phase.json"
    if done.is_file():
        logger.info("seed %d: intermediate phase already finished (%s)", seed, done)
        return str(out / "encoder"), json.loads(done.read_text())
    model = build_model(_trainable_encoder(base_model, phase, lora_rank), data.specs)
    result = train_phase(
        model,
        tokenizer,
        phase,
        data,
        seed=seed,
        env=env,
        work_dir=out,
        label=f"seed {seed} intermediate {'+'.join(data.specs)}",
    )
    adapter = merge_lora(model)
    if env.is_main:
        save_encoder(model.encoder, tokenizer, out / "encoder")
        if adapter is not None and lora_rank is not None:
            save_adapter(adapter, run_dir / ADAPTERS_DIR, "intermediate", lora_rank)
        done.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    _barrier(env)
    return str(out / "encoder"), result


# Keys that differ between runs meant to be pooled: each process of a parallel run names its own.
_POOLED_KEYS = frozenset({"seeds", "output_dir"})


def config_differences(
    ours: Mapping[str, Any], theirs: Mapping[str, Any], prefix: str = ""
) -> list[str]:
    """Dotted keys whose values differ between two resolved configs."""
    differences = []
    for key in sorted(set(ours) | set(theirs)):
        a, b = ours.get(key), theirs.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            differences += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            differences.append(f"{prefix}{key}")
    return differences


def check_same_config(recipe: Recipe, manifest_path: Path) -> None:
    """A finished seed is reused only if it ran with this config (seeds and output_dir aside)."""
    config = json.loads(manifest_path.read_text())["config"]
    ours = {k: v for k, v in recipe.model_dump(mode="json").items() if k not in _POOLED_KEYS}
    theirs = {k: v for k, v in config.items() if k not in _POOLED_KEYS}
    differences = config_differences(ours, theirs)
    if differences:
        raise RecipeError(
            f"{manifest_path.parent.parent} finished with a different config "
            f"({', '.join(differences)}): give this recipe its own output_dir, or delete that "
            "seed directory to retrain it"
        )


def finished_runs(output_dir: Path) -> list[SeedRun]:
    """Every finished seed in `output_dir`, including those other processes trained."""
    runs = []
    for metrics_path in output_dir.glob("seed-*/metrics.json"):
        metrics = json.loads(metrics_path.read_text())
        runs.append(SeedRun(int(metrics["seed"]), metrics_path.parent, metrics, skipped=True))
    return sorted(runs, key=lambda run: run.seed)


def summarise_seeds(recipe: Recipe, runs: Sequence[SeedRun]) -> dict[str, Any]:
    """Mean and sample standard deviation of each language's accuracy over every finished seed
    in the output directory: parallel processes, one seed each, all end with the full summary."""
    ours = {run.seed for run in runs}
    runs = [*runs, *(run for run in finished_runs(recipe.output_dir) if run.seed not in ours)]
    runs = sorted(runs, key=lambda run: run.seed)
    per_lang: dict[str, list[float]] = {}
    for run in runs:
        for lang, values in run.metrics.get("languages", {}).items():
            per_lang.setdefault(lang, []).append(values["accuracy"]["estimate"])
    summary = {
        "recipe": recipe.name,
        "seeds": [run.seed for run in runs],
        "languages": {
            lang: {
                "mean": float(np.mean(values)),
                "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
                "per_seed": values,
            }
            for lang, values in sorted(per_lang.items())
        },
        "runs": {str(run.seed): str(run.run_dir / "checkpoint" / RUN_MANIFEST) for run in runs},
    }
    (recipe.output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
