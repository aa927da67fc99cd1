"""`polyprobe train` and `polyprobe train-compare`: the training pipeline's command line."""

from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

INSTALL_HINT = (
    'training needs the train extra: pip install torch==2.13.0 && pip install -e ".[train]"'
)


def shipped_recipes() -> dict[str, Path]:
    folder = resources.files("training") / "recipes"
    return {
        Path(entry.name).stem: Path(str(entry))
        for entry in folder.iterdir()
        if entry.name.endswith((".yaml", ".toml"))
    }


def resolve_recipe_path(value: str) -> Path:
    """A recipe file, or the name of one shipped with polyprobe (see `--list`)."""
    path = Path(value)
    if path.is_file():
        return path
    shipped = shipped_recipes()
    if value in shipped:
        return shipped[value]
    raise FileNotFoundError(
        f"recipe {value!r} is neither a file nor a shipped recipe ({', '.join(sorted(shipped))})"
    )


def _train(args: argparse.Namespace) -> int:
    if args.list:
        for name, path in sorted(shipped_recipes().items()):
            print(f"{name}\t{path}")
        return 0
    if args.recipe is None:
        print("polyprobe train: give --recipe FILE_OR_NAME (or --list)", file=sys.stderr)
        return 2
    try:
        from training.pipeline import run_recipe
        from training.recipe import RecipeError, load_recipe
        from training.splits import LeakageError
        from training.tasks import TaskError
    except ImportError as exc:
        print(f"polyprobe train: {INSTALL_HINT} (missing: {exc.name})", file=sys.stderr)
        return 2
    try:
        path = resolve_recipe_path(args.recipe)
        recipe, resolved = load_recipe(path, args.set)
        runs = run_recipe(recipe, resolved, recipe_text=path.read_text(encoding="utf-8"))
    except (FileNotFoundError, RecipeError, LeakageError, TaskError) as exc:
        print(f"polyprobe train: {exc}", file=sys.stderr)
        return 2
    for run in runs:
        languages: dict[str, Any] = run.metrics.get("languages", {})
        scores = ", ".join(f"{k} {v['accuracy']['estimate']:.3f}" for k, v in languages.items())
        state = "reused" if run.skipped else "trained"
        print(f"seed {run.seed} ({state}): {scores} -> {run.run_dir / 'checkpoint'}")
    print(f"summary: {recipe.output_dir / 'summary.json'}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from training.compare import compare_runs, write_comparison

    try:
        report = compare_runs(args.baseline, args.candidate)
    except (FileNotFoundError, ValueError) as exc:
        print(f"polyprobe train-compare: {exc}", file=sys.stderr)
        return 2
    for path in write_comparison(report, args.out):
        print(f"wrote {path}")
    print(json.dumps(report["pooled"], indent=2))
    return 0


def add_commands(commands: Any) -> None:
    train = commands.add_parser(
        "train",
        help="run a training recipe: intermediate task(s) -> target task -> zero-shot evaluation",
        description="Run a STILTs (or direct fine-tuning) recipe for every seed it lists. Works "
        "alone or under torchrun / accelerate launch (DDP; the effective batch stays fixed). "
        "Re-running the same command resumes an interrupted run.",
    )
    train.add_argument("--recipe", help="recipe file (.yaml/.toml) or shipped recipe name")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value, e.g. --set target.lr=2e-5 --set seeds=[0]",
    )
    train.add_argument("--list", action="store_true", help="list the shipped recipes")
    train.set_defaults(handler=_train)

    compare = commands.add_parser(
        "train-compare",
        help="paired per-language comparison of two training runs (e.g. STILTs vs direct)",
        description="Pairs seeds of two runs' output directories and compares their zero-shot "
        "predictions on the same ids: accuracy differences with paired bootstrap CIs and exact "
        "McNemar tests per language and seed, and the seed-averaged difference.",
    )
    compare.add_argument("baseline", type=Path, help="output_dir of the baseline run")
    compare.add_argument("candidate", type=Path, help="output_dir of the candidate run")
    compare.add_argument("--out", type=Path, required=True, help="directory for the report")
    compare.set_defaults(handler=_compare)
