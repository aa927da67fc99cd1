"""Where a checkpoint came from: the training run's manifest and metrics, read leniently.

`training/` writes `polyprobe_run.json` beside the checkpoint it saves (recipe, seeds, data ids,
git commit, metrics, ...) and may write `metrics.json`. Both formats grow over time, so unknown keys
are kept verbatim (in `Provenance.training_run`) and a known key with an unexpected type is logged
and skipped, never fatal: a bundle from a newer trainer must still export.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from export.bundle import Evaluation, LanguageResult, Provenance

logger = logging.getLogger(__name__)

RUN_MANIFEST_NAME = "polyprobe_run.json"
METRICS_NAME = "metrics.json"
LIBRARIES = ("torch", "transformers", "optimum-onnx", "onnx", "onnxruntime", "tokenizers")
_LANGUAGE = re.compile(r"^[a-z]{2,3}$")


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        logger.warning("ignoring %s: not valid JSON (%s)", path, exc)
        return None
    if not isinstance(data, dict):
        logger.warning("ignoring %s: not a JSON object", path)
        return None
    return data


def _find(run: Mapping[str, Any], *keys: str) -> Any:
    """The first of `keys` present at the top level or one level down (e.g. run['git']['commit'])."""
    for key in keys:
        if key in run:
            return run[key]
    for value in run.values():
        if isinstance(value, Mapping):
            for key in keys:
                if key in value:
                    return value[key]
    return None


def _typed(value: Any, kind: type | tuple[type, ...], key: str) -> Any:
    if value is None or isinstance(value, kind):
        return value
    logger.warning("%s: ignoring %s=%r (unexpected type)", RUN_MANIFEST_NAME, key, value)
    return None


def _recipe(value: Any) -> str | None:
    if isinstance(value, Mapping):
        name = value.get("name")
        return name if isinstance(name, str) else json.dumps(value, sort_keys=True)
    return _typed(value, str, "recipe")  # type: ignore[no-any-return]


def _seeds(run: Mapping[str, Any]) -> list[int]:
    seeds = _find(run, "seeds", "seed")
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        return [seeds]
    if isinstance(seeds, list) and all(isinstance(s, int) for s in seeds):
        return list(seeds)
    if isinstance(seeds, Mapping) and all(isinstance(s, int) for s in seeds.values()):
        return sorted(set(seeds.values()))
    _typed(seeds, (), "seeds")
    return []


def _data_ids(run: Mapping[str, Any]) -> dict[str, str]:
    value = _find(run, "data_ids")
    if not isinstance(value, Mapping):
        _typed(value, (), "data_ids")
        return {}
    return {
        str(k): v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in value.items()
    }


def _tasks(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [t if isinstance(t, str) else str(_find(t, "name", "task")) for t in value]
    _typed(value, (), "intermediate_tasks")
    return []


def find_run_dir(checkpoint_dir: Path) -> Path | None:
    """The folder holding the run manifest: the checkpoint's own, or its parent (run/checkpoint)."""
    for candidate in (checkpoint_dir, checkpoint_dir.parent):
        if (candidate / RUN_MANIFEST_NAME).is_file():
            return candidate
    return None


def read_provenance(checkpoint_dir: Path, *, source: str, target_task: str | None) -> Provenance:
    """Provenance from the training run's manifest when there is one, else only the source.

    `exporter` is a placeholder until the export path is known.
    """
    versions = {lib: package_version(lib) for lib in LIBRARIES}
    run_dir = find_run_dir(checkpoint_dir)
    run = _read_json(run_dir / RUN_MANIFEST_NAME) if run_dir else None
    if run is None:
        return Provenance(
            base_model=f"unknown: no {RUN_MANIFEST_NAME} beside {source}",
            target_task=target_task or "unspecified",
            exporter="pending",
            source=source,
            library_versions=versions,
        )
    base = _typed(_find(run, "base_model", "base_model_id", "model_name_or_path"), str, "base")
    run_task = _typed(_find(run, "target_task"), str, "target_task")
    commit = _typed(_find(run, "git_commit", "commit", "code_version"), str, "git_commit")
    return Provenance(
        base_model=base or "unknown (not in the run manifest)",
        recipe=_recipe(_find(run, "recipe")),
        intermediate_tasks=_tasks(_find(run, "intermediate_tasks")),
        target_task=target_task or run_task or "unspecified",
        seeds=_seeds(run),
        data_ids=_data_ids(run),
        exporter="pending",
        code_version=commit,
        library_versions=versions,
        source=source,
        training_run=run,
    )


def _number(value: Any) -> float | None:
    """A plain number, or the point estimate of `polyprobe train`'s {estimate, ci_low, ...}."""
    if isinstance(value, Mapping):
        value = value.get("estimate")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _interval(value: Any) -> tuple[float, float] | None:
    """(ci_low, ci_high) of `polyprobe train`'s {estimate, ci_low, ci_high}, when both are there."""
    if not isinstance(value, Mapping):
        return None
    low, high = _number(value.get("ci_low")), _number(value.get("ci_high"))
    return None if low is None or high is None else (low, high)


def _language_result(value: Any) -> LanguageResult | None:
    if isinstance(value, Mapping):
        raw_accuracy = value.get("accuracy", value.get("acc"))
        accuracy = _number(raw_accuracy)
        n = _number(value.get("n", value.get("count", value.get("num_examples"))))
        f1 = _number(value.get("macro_f1", value.get("f1")))
        ci, majority = _interval(raw_accuracy), _number(value.get("majority_baseline"))
    else:
        accuracy, n, f1, ci, majority = _number(value), None, None, None, None
    if accuracy is None or not 0.0 <= accuracy <= 1.0:
        return None
    if majority is not None and not 0.0 <= majority <= 1.0:
        majority = None
    return LanguageResult(
        n=int(n or 0), accuracy=accuracy, accuracy_ci95=ci, macro_f1=f1, majority_baseline=majority
    )


def _evaluated_ids(metrics: Mapping[str, Any]) -> str:
    """'1500-1999 of <corpus>' from `polyprobe train`'s evaluation_ids (the same range in every
    language), else whatever id range the metrics name."""
    recorded = metrics.get("evaluation_ids")
    if isinstance(recorded, Mapping):
        ranges = {str(v) for k, v in recorded.items() if k != "corpus"}
        corpus = recorded.get("corpus")
        if len(ranges) == 1:
            return f"{ranges.pop()} of {corpus}" if corpus else ranges.pop()
    ids = _find(metrics, "eval_ids", "ids")
    return ids if isinstance(ids, str) else "see the training run"


def _per_language_tables(node: Any, path: str) -> Iterator[tuple[str, dict[str, LanguageResult]]]:
    """Every mapping of language code -> accuracy (or {accuracy, n, ...}) in a JSON tree."""
    if not isinstance(node, Mapping):
        return
    table = {
        key: result
        for key, value in node.items()
        if _LANGUAGE.match(str(key)) and (result := _language_result(value)) is not None
    }
    if table:
        yield path, table
    for key, value in node.items():
        if not _LANGUAGE.match(str(key)):
            yield from _per_language_tables(value, f"{path}.{key}" if path else str(key))


def read_training_evaluation(checkpoint_dir: Path, target_task: str | None) -> list[Evaluation]:
    """Per-language results from the run's metrics.json, else from its manifest's `metrics`."""
    run_dir = find_run_dir(checkpoint_dir) or checkpoint_dir
    metrics = _read_json(run_dir / METRICS_NAME)
    origin = METRICS_NAME
    if metrics is None:
        run = _read_json(run_dir / RUN_MANIFEST_NAME) or {}
        metrics = run.get("metrics") if isinstance(run.get("metrics"), dict) else None
        origin = f"{RUN_MANIFEST_NAME} metrics"
    if metrics is None:
        return []
    ids = _evaluated_ids(metrics)
    return [
        Evaluation(
            task=target_task or "unspecified",
            split=f"{origin}: {path or '<top level>'}",
            ids=ids,
            per_language=table,
            notes=f"read from the training run's {origin}",
        )
        for path, table in _per_language_tables(metrics, "")
    ]
