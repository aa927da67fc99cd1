"""A tiny STILTs recipe end to end on CPU: a four-family multi-task intermediate phase
(classification, multiple choice, extractive QA, tagging; temperature sampling) -> PAWS-X-style
classification target -> zero-shot evaluation in three languages. Then: a re-run skips the
finished seed, a phase resumes from a resume.pt written mid-phase, and a 2-process torchrun (gloo)
run of the same recipe ends with the single-process weights."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.training_helpers import FIXTURES, build_tiny_xlmr

torch = pytest.importorskip("torch", reason="training tests need the train extra")

pytestmark = pytest.mark.integration

SEED = 0


def _recipe(base_model: Path, output_dir: Path) -> dict[str, Any]:
    def ids(start: int, stop: int) -> dict[str, int]:
        return {"start": start, "stop": stop}

    def task(
        name: str, folder: str, train: tuple[int, int], dev: tuple[int, int]
    ) -> dict[str, Any]:
        return {
            "task": name,
            "train": {"path": folder, "ids": ids(*train)},
            "dev": {"path": folder, "ids": ids(*dev)},
        }

    return {
        "name": "tiny-stilts",
        "base_model": str(base_model),
        "data_root": str(FIXTURES),
        "seeds": [SEED],
        "output_dir": str(output_dir),
        "intermediate": {
            "tasks": [
                task("xnli", "nli", (0, 10), (10, 12)),
                task("hellaswag", "hellaswag", (0, 5), (5, 6)),
                task("squad_v2", "squad_v2", (0, 6), (6, 8)),
                task("conll2003_ner", "conll2003_ner", (0, 5), (5, 6)),
            ],
            "sampling": "temperature",
            "sampling_temperature": 2.0,
            "lr": 1e-3,
            "epochs": 1,
            "effective_batch": 4,
            "max_length": 64,
            "eval_every_steps": 4,
        },
        "target": {
            "tasks": [task("pawsx", "pawsx", (0, 8), (8, 10))],
            "lr": 1e-3,
            "epochs": 2,
            "effective_batch": 4,
            "max_length": 64,
            "eval_every_steps": 1,
            "warmup_ratio": 0.0,
        },
        "evaluation": {
            "data": {"path": "pawsx", "languages": ["en", "de", "fr"], "ids": ids(10, 16)}
        },
    }


@dataclass
class FirstRun:
    recipe_path: Path
    output_dir: Path
    model_dir: Path
    # Copies of target/resume.pt after each step's evaluation (keyed by step).
    snapshots: dict[int, Path]


def _train(argv: list[str], capsys: pytest.CaptureFixture[str] | None = None) -> str:
    from polyprobe.cli import main

    root = logging.getLogger()
    before = list(root.handlers)
    try:
        assert main(["train", *argv]) == 0
    finally:
        for handler in root.handlers[len(before) :]:
            root.removeHandler(handler)
            handler.close()
    return capsys.readouterr().out if capsys else ""


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FirstRun]:
    import training.loop as loop

    base = tmp_path_factory.mktemp("pipeline")
    model_dir = build_tiny_xlmr(base / "tiny-xlmr")
    output_dir = base / "run"
    recipe_path = base / "tiny.yaml"
    recipe_path.write_text(yaml.safe_dump(_recipe(model_dir, output_dir)))
    snapshots: dict[int, Path] = {}
    original = loop._save_resume

    def keep_copies(work_dir: Path, fingerprint: str, step: int, *args: Any) -> None:
        original(work_dir, fingerprint, step, *args)
        if work_dir.name == "target":
            snapshots[step] = Path(
                shutil.copy(work_dir / loop.RESUME_FILE, base / f"resume-{step}.pt")
            )

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "_save_resume", keep_copies)
        _train(["--recipe", str(recipe_path)])
    yield FirstRun(recipe_path, output_dir, model_dir, snapshots)


def _classifier_state(checkpoint: Path) -> dict[str, Any]:
    from transformers import XLMRobertaForSequenceClassification

    model = XLMRobertaForSequenceClassification.from_pretrained(checkpoint)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_outputs(first_run: FirstRun) -> None:
    from transformers import AutoTokenizer, XLMRobertaForSequenceClassification

    run_dir = first_run.output_dir / f"seed-{SEED}"
    checkpoint = run_dir / "checkpoint"
    model = XLMRobertaForSequenceClassification.from_pretrained(checkpoint)
    assert model.config.id2label == {0: "not_paraphrase", 1: "paraphrase"}
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    logits = model(**tokenizer(["A river."], ["A lake."], return_tensors="pt")).logits
    assert logits.shape == (1, 2)

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["stilts"] is True and metrics["zero_shot"] is True and metrics["notes"] == []
    assert metrics["selection"] == "best_dev on pawsx (English dev)"
    assert set(metrics["languages"]) == {"en", "de", "fr"}
    for lang in ("en", "de", "fr"):
        accuracy = metrics["languages"][lang]["accuracy"]
        assert metrics["languages"][lang]["n"] == 6
        assert accuracy["ci_low"] <= accuracy["estimate"] <= accuracy["ci_high"]
        assert accuracy["method"].lower().startswith("wilson")
    assert metrics["average_non_source"]["languages"] == ["de", "fr"]
    assert "gap_to_source" in metrics
    assert metrics["evaluation_ids"]["en"] == "10-15"

    manifest = json.loads((checkpoint / "polyprobe_run.json").read_text())
    data = manifest["data_ids"]
    assert {k: v["en"] for k, v in data["intermediate"].items()} == {
        "xnli.train": "0-9",
        "xnli.dev": "10-11",
        "hellaswag.train": "0-4",
        "hellaswag.dev": "5",
        "squad_v2.train": "0-5",
        "squad_v2.dev": "6-7",
        "conll2003_ner.train": "0-4",
        "conll2003_ner.dev": "5",
    }
    assert data["target"]["pawsx.train"]["en"] == "0-7"
    assert data["target"]["pawsx.dev"]["en"] == "8-9"
    assert {k: data["evaluation"]["pawsx.eval"][k] for k in ("en", "de", "fr")} == dict.fromkeys(
        ("en", "de", "fr"), "10-15"
    )
    intermediate = manifest["phases"]["intermediate"]
    assert intermediate["planned_steps"] == 7  # ceil(26 examples / 4)
    assert set(intermediate["evaluations"][0]["scores"]) == {
        "xnli",
        "hellaswag",
        "squad_v2",
        "conll2003_ner",
    }
    assert manifest["phases"]["target"]["planned_steps"] == 4
    assert manifest["seed"] == SEED and manifest["world_size"] == 1
    assert (run_dir / "metrics.png").stat().st_size > 0
    assert len((run_dir / "predictions.jsonl").read_text().splitlines()) == 18
    assert (first_run.output_dir / "train.log").is_file()
    assert json.loads((first_run.output_dir / "summary.json").read_text())["seeds"] == [SEED]


def test_a_second_run_skips_the_finished_seed(
    first_run: FirstRun, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = first_run.output_dir / f"seed-{SEED}" / "checkpoint" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    capsys.readouterr()
    out = _train(["--recipe", str(first_run.recipe_path)], capsys)
    assert f"seed {SEED} (reused)" in out
    assert weights.stat().st_mtime_ns == stamp


def test_a_finished_seed_with_another_config_is_refused_not_reused(
    first_run: FirstRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from polyprobe.cli import main

    output_dir = tmp_path / "changed"
    shutil.copytree(first_run.output_dir, output_dir)
    argv = ["train", "--recipe", str(first_run.recipe_path), "--set", f"output_dir={output_dir}"]
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        assert main([*argv, "--set", "target.lr=5e-4", "--set", "target.warmup_ratio=0.3"]) == 2
    finally:
        for handler in root.handlers[len(before) :]:
            root.removeHandler(handler)
            handler.close()
    error = capsys.readouterr().err
    assert f"seed-{SEED} finished with a different config (target.lr, target.warmup_ratio)" in error
    assert "give this recipe its own output_dir" in error


def test_the_summary_pools_seeds_that_other_processes_finished(
    first_run: FirstRun, tmp_path: Path
) -> None:
    output_dir = tmp_path / "pooled"
    shutil.copytree(first_run.output_dir, output_dir)
    # Another process's seed, finished in the same directory (the same config, seeds aside).
    other = output_dir / f"seed-{SEED + 1}"
    shutil.copytree(output_dir / f"seed-{SEED}", other)
    metrics = json.loads((other / "metrics.json").read_text())
    (other / "metrics.json").write_text(json.dumps({**metrics, "seed": SEED + 1}))
    _train(["--recipe", str(first_run.recipe_path), "--set", f"output_dir={output_dir}"])
    summary = json.loads((output_dir / "summary.json").read_text())
    assert summary["seeds"] == [SEED, SEED + 1]
    assert all(len(lang["per_seed"]) == 2 for lang in summary["languages"].values())


def test_a_phase_resumes_from_its_resume_file(first_run: FirstRun, tmp_path: Path) -> None:
    assert sorted(first_run.snapshots) == [1, 2, 3, 4]
    output_dir = tmp_path / "resumed"
    shutil.copytree(first_run.output_dir, output_dir)
    run_dir = output_dir / f"seed-{SEED}"
    (run_dir / "metrics.json").unlink()
    shutil.rmtree(run_dir / "checkpoint")
    shutil.copy(first_run.snapshots[2], run_dir / "target" / "resume.pt")
    _train(["--recipe", str(first_run.recipe_path), "--set", f"output_dir={output_dir}"])
    log = (output_dir / "train.log").read_text()
    assert "intermediate phase already finished" in log
    assert f"resumed {run_dir / 'target' / 'resume.pt'} at step 2" in log
    resumed = _classifier_state(run_dir / "checkpoint")
    original = _classifier_state(first_run.output_dir / f"seed-{SEED}" / "checkpoint")
    for name, value in original.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=1e-6, msg=name)
    manifest = json.loads((run_dir / "checkpoint" / "polyprobe_run.json").read_text())
    assert manifest["phases"]["target"]["steps"] == 4


def test_two_process_ddp_matches_one_process(first_run: FirstRun, tmp_path: Path) -> None:
    output_dir = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "polyprobe",
        "train",
        "--recipe",
        str(first_run.recipe_path),
        "--set",
        f"output_dir={output_dir}",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    manifest = json.loads(
        (output_dir / f"seed-{SEED}" / "checkpoint" / "polyprobe_run.json").read_text()
    )
    assert manifest["world_size"] == 2
    single = json.loads(
        (first_run.output_dir / f"seed-{SEED}" / "checkpoint" / "polyprobe_run.json").read_text()
    )
    # Same plan: the effective batch (and so the step count) does not depend on the world size.
    for phase in ("intermediate", "target"):
        assert (
            manifest["phases"][phase]["planned_steps"] == single["phases"][phase]["planned_steps"]
        )
    assert manifest["data_ids"] == single["data_ids"]
    ddp = _classifier_state(output_dir / f"seed-{SEED}" / "checkpoint")
    alone = _classifier_state(first_run.output_dir / f"seed-{SEED}" / "checkpoint")
    for name, value in alone.items():
        torch.testing.assert_close(ddp[name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_every_seed_records_the_code_the_process_imported(
    first_run: FirstRun, tmp_path: Path
) -> None:
    """A checkout that moves on between seeds (commits while a long run trains) does not change
    what later seeds record: they run the code imported when the run started."""
    import training.pipeline as pipeline

    recipe = _recipe(first_run.model_dir, tmp_path / "run")
    recipe |= {"seeds": [SEED, SEED + 1], "intermediate": None}
    recipe["target"] |= {"epochs": 1}
    recipe_path = tmp_path / "two-seeds.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    commits = iter(["imported-at-start", "committed-during-seed-0", "later"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipeline, "git_state", lambda _: {"commit": next(commits), "dirty": False})
        _train(["--recipe", str(recipe_path)])
    for seed in (SEED, SEED + 1):
        manifest = json.loads(
            (tmp_path / "run" / f"seed-{seed}" / "checkpoint" / "polyprobe_run.json").read_text()
        )
        assert manifest["git"]["commit"] == "imported-at-start", seed
        assert manifest["intra_op_threads"] == torch.get_num_threads()
