"""A tiny STILTs recipe with `lora_rank`: each phase trains low-rank adapters on a frozen encoder,
the checkpoint holds the merged weights, and the adapter files alone rebuild it from the base."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.training_helpers import FIXTURES, build_tiny_xlmr

torch = pytest.importorskip("torch", reason="training tests need the train extra")
pytest.importorskip("peft", reason="LoRA training needs the train extra")

pytestmark = pytest.mark.integration

RANK = 4


def _recipe(base_model: Path, output_dir: Path) -> dict[str, Any]:
    def phase(task: str, folder: str, train: int, dev: int) -> dict[str, Any]:
        return {
            "tasks": [
                {
                    "task": task,
                    "train": {"path": folder, "ids": {"start": 0, "stop": train}},
                    "dev": {"path": folder, "ids": {"start": train, "stop": dev}},
                }
            ],
            "lr": 5e-3,
            "epochs": 2,
            "effective_batch": 4,
            "max_length": 64,
            "warmup_ratio": 0.0,
        }

    return {
        "name": "tiny-stilts-lora",
        "base_model": str(base_model),
        "data_root": str(FIXTURES),
        "seeds": [0],
        "output_dir": str(output_dir),
        "lora_rank": RANK,
        "intermediate": phase("xnli", "nli", 10, 12),
        "target": phase("pawsx", "pawsx", 8, 10),
        "evaluation": {
            "data": {"path": "pawsx", "languages": ["en", "de"], "ids": {"start": 10, "stop": 16}}
        },
    }


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from polyprobe.cli import main

    base = tmp_path_factory.mktemp("lora")
    model_dir = build_tiny_xlmr(base / "tiny-xlmr")
    recipe_path = base / "tiny-lora.yaml"
    recipe_path.write_text(yaml.safe_dump(_recipe(model_dir, base / "run")))
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        assert main(["train", "--recipe", str(recipe_path)]) == 0
    finally:
        for handler in root.handlers[len(before) :]:
            root.removeHandler(handler)
            handler.close()
    return model_dir, base / "run" / "seed-0"


def _state(checkpoint: Path) -> dict[str, Any]:
    from transformers import XLMRobertaForSequenceClassification

    model = XLMRobertaForSequenceClassification.from_pretrained(checkpoint)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_only_adapters_and_the_head_train(lora_run: tuple[Path, Path]) -> None:
    from transformers import AutoModel

    base_dir, run_dir = lora_run
    base = AutoModel.from_pretrained(base_dir, add_pooling_layer=False).state_dict()
    trained = _state(run_dir / "checkpoint")
    frozen = [name for name in base if "LayerNorm" in name or "embeddings" in name]
    assert frozen
    for name in frozen:
        assert torch.equal(trained[f"roberta.{name}"], base[name]), name
    query = "encoder.layer.0.attention.self.query.weight"
    assert not torch.allclose(trained[f"roberta.{query}"], base[query])


def test_adapter_files_rebuild_the_checkpoint(lora_run: tuple[Path, Path]) -> None:
    from safetensors import safe_open
    from transformers import AutoModel

    from training.model import ADAPTERS_DIR, apply_lora

    base_dir, run_dir = lora_run
    adapters = run_dir / ADAPTERS_DIR
    encoder = AutoModel.from_pretrained(base_dir, add_pooling_layer=False)
    head: dict[str, Any] = {}
    for phase in ("intermediate", "target"):
        with safe_open(str(adapters / f"{phase}.safetensors"), framework="pt") as f:
            assert f.metadata()["rank"] == str(RANK)
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
        lora = {k.removeprefix("lora."): v for k, v in tensors.items() if k.startswith("lora.")}
        assert lora and all("lora_" in name for name in lora)
        encoder = apply_lora(encoder, lora, RANK)
        head = {k.removeprefix("head."): v for k, v in tensors.items() if k.startswith("head.")}
    assert head, "the target adapter file carries the classifier head"
    trained = _state(run_dir / "checkpoint")
    for name, value in encoder.state_dict().items():
        torch.testing.assert_close(value, trained[f"roberta.{name}"], rtol=1e-5, atol=1e-6)
    for name, value in head.items():
        torch.testing.assert_close(value, trained[f"classifier.{name}"])


def test_an_adapter_that_does_not_fit_the_encoder_is_refused(lora_run: tuple[Path, Path]) -> None:
    from transformers import AutoModel

    from training.model import apply_lora

    base_dir, _ = lora_run
    encoder = AutoModel.from_pretrained(base_dir, add_pooling_layer=False)
    foreign = {"encoder.layer.99.attention.self.query.lora_A.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match="adapter has weights this encoder lacks"):
        apply_lora(encoder, foreign, RANK)
    with pytest.raises(ValueError, match="adapter lacks weights for"):
        apply_lora(AutoModel.from_pretrained(base_dir, add_pooling_layer=False), {}, RANK)


@pytest.fixture(scope="module")
def artifact(lora_run: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from export.artifacts import read_artifact
    from polyprobe.cli import main

    out = tmp_path_factory.mktemp("artifact") / "tiny-stilts"
    assert (
        main(["artifacts", "pack", str(lora_run[1]), "--name", "tiny-stilts", "--out", str(out)])
        == 0
    )
    manifest = read_artifact(out)
    assert manifest.phases == ["intermediate", "target"]
    assert manifest.lora_rank == RANK
    return out


def test_the_assembled_checkpoint_predicts_as_the_trained_one(
    lora_run: tuple[Path, Path], artifact: Path, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer, XLMRobertaForSequenceClassification

    from export.artifacts import assemble_checkpoint

    base_dir, run_dir = lora_run
    assembled = assemble_checkpoint(artifact, base_dir, tmp_path / "checkpoint")
    tokenizer = AutoTokenizer.from_pretrained(assembled)
    batch = tokenizer(
        ["The cat sat on the mat.", "Der Hund schläft.", "Il pleut."],
        ["A cat was sitting on the mat.", "Die Katze schläft.", "Il fait beau."],
        return_tensors="pt",
        padding=True,
    )
    logits = {}
    for name, checkpoint in {"trained": run_dir / "checkpoint", "assembled": assembled}.items():
        model = XLMRobertaForSequenceClassification.from_pretrained(checkpoint).eval()
        with torch.no_grad():
            logits[name] = model(**batch).logits
    torch.testing.assert_close(logits["assembled"], logits["trained"], rtol=1e-4, atol=1e-5)
    assert (assembled / "metrics.json").read_text() == (run_dir / "metrics.json").read_text()


def test_bundle_assembly_is_deterministic(
    lora_run: tuple[Path, Path], artifact: Path, tmp_path: Path
) -> None:
    from export.artifacts import assemble_bundle
    from export.bundle import read_manifest
    from polyprobe.cli import main

    argv = ["artifacts", "assemble", str(artifact), "--base", str(lora_run[0])]
    assert main([*argv, "--out", str(tmp_path / "bundle-cli")]) == 0
    first = read_manifest(tmp_path / "bundle-cli")
    second = assemble_bundle(artifact, lora_run[0], tmp_path / "bundle-api")
    assert [m.sha256 for m in first.models] == [m.sha256 for m in second.models]
    assert first.tokenizer.sha256 == second.tokenizer.sha256
    assert first.provenance.seeds == [0]
    assert first.evaluation, "the run's held-out evaluation travels into the bundle"


def test_a_corrupted_artifact_is_refused(
    lora_run: tuple[Path, Path],
    artifact: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from export.artifacts import ArtifactError, assemble_checkpoint
    from polyprobe.cli import main

    broken = Path(shutil.copytree(artifact, tmp_path / "broken"))
    adapter = broken / "target.safetensors"
    data = bytearray(adapter.read_bytes())
    data[-1] ^= 0xFF
    adapter.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"target.safetensors is corrupted: .* restore it"):
        assemble_checkpoint(broken, lora_run[0], tmp_path / "checkpoint")
    capsys.readouterr()
    out = tmp_path / "bundle"
    assert (
        main(["artifacts", "assemble", str(broken), "--base", str(lora_run[0]), "--out", str(out)])
        == 2
    )
    assert "target.safetensors is corrupted" in capsys.readouterr().err
    assert not out.exists()
    (broken / "artifact.json").unlink()
    with pytest.raises(ArtifactError, match=r"artifact\.json is missing"):
        assemble_checkpoint(broken, lora_run[0], tmp_path / "checkpoint")


def test_assembly_on_a_different_base_is_refused(artifact: Path, tmp_path: Path) -> None:
    from export.artifacts import TRAINING_LOGITS, ArtifactError, assemble_checkpoint

    assert (artifact / TRAINING_LOGITS).is_file(), "pack records the training-time logits"
    other_base = build_tiny_xlmr(tmp_path / "other-base", seed=1)
    with pytest.raises(ArtifactError, match="differs from the training-time checkpoint by up to"):
        assemble_checkpoint(artifact, other_base, tmp_path / "checkpoint")


def test_float16_adapters_halve_the_artifact_and_still_rebuild_the_checkpoint(
    lora_run: tuple[Path, Path], artifact: Path, tmp_path: Path
) -> None:
    from safetensors import safe_open

    from export.artifacts import TRAINING_LOGITS_TOLERANCE, assemble_checkpoint, pack_run

    out = tmp_path / "tiny-stilts-fp16"
    manifest, drift = pack_run(lora_run[1], out, "tiny-stilts", adapter_dtype="float16")
    assert manifest.adapter_dtype == "float16"
    assert 0 < drift <= TRAINING_LOGITS_TOLERANCE, "float16 rounding shows, within tolerance"
    with safe_open(str(out / "target.safetensors"), framework="pt") as f:
        dtypes = {name: f.get_tensor(name).dtype for name in f.keys()}  # noqa: SIM118
    assert {d for n, d in dtypes.items() if n.startswith("lora.")} == {torch.float16}
    assert {d for n, d in dtypes.items() if n.startswith("head.")} == {torch.float32}
    for phase in manifest.phases:
        lora_bytes = {}
        for folder in (artifact, out):
            with safe_open(str(folder / f"{phase}.safetensors"), framework="pt") as f:
                lora_bytes[folder] = sum(
                    f.get_tensor(n).nbytes
                    for n in f.keys()  # noqa: SIM118
                    if n.startswith("lora.")
                )
        assert lora_bytes[out] * 2 == lora_bytes[artifact]
    assemble_checkpoint(out, lora_run[0], tmp_path / "checkpoint")


def test_pack_refuses_an_artifact_that_does_not_rebuild_its_checkpoint(
    lora_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from export.artifacts import RUN_MANIFEST
    from polyprobe.cli import main

    run_dir = Path(shutil.copytree(lora_run[1], tmp_path / "seed-0"))
    manifest_path = run_dir / "checkpoint" / RUN_MANIFEST
    run = json.loads(manifest_path.read_text())
    run["config"]["base_model"] = str(build_tiny_xlmr(tmp_path / "other-base", seed=1))
    manifest_path.write_text(json.dumps(run))
    out = tmp_path / "artifacts" / "tiny"
    argv = ["artifacts", "pack", str(run_dir), "--name", "tiny", "--out", str(out)]
    assert main(argv) == 2
    assert "differs from the training-time checkpoint" in capsys.readouterr().err
    assert not out.exists()
    assert list((tmp_path / "artifacts").iterdir()) == [], "no staging folder is left behind"
    out.mkdir()
    (out / "notes.txt").write_text("not an artifact")
    assert main(argv) == 2
    assert "holds files but no artifact.json" in capsys.readouterr().err
    assert (out / "notes.txt").is_file()


def _wait_ready(client: Any) -> None:
    deadline = time.monotonic() + 120
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the server never became ready"
        time.sleep(0.2)


def test_serve_assembles_shipped_artifacts_into_an_empty_repository(
    artifact: Path, tmp_path: Path
) -> None:
    from tests.integration.server import serve

    shipped = tmp_path / "shipped"
    shutil.copytree(artifact, shipped / "tiny-stilts")
    repo = tmp_path / "models"
    env = {"POLYPROBE_ARTIFACTS_DIR": str(shipped)}
    with serve(repo, env) as server, server.client() as client:
        _wait_ready(client)
        pair = {"text": "Der Hund schläft.", "text_pair": "Die Katze schläft."}
        response = client.post("/v1/models/tiny-stilts/predict", json={"inputs": [pair]})
        assert response.status_code == 200, response.text
        assert response.json()["version"] == "1"
        assert "[1/1] tiny-stilts: done in" in server.log_text()
    assert sorted(p.name for p in repo.iterdir()) == ["tiny-stilts"]
    assert not list(tmp_path.glob(".models-assembling-*")), "the scratch folder is cleaned up"
    stamp = (repo / "tiny-stilts" / "1" / "bundle.json").stat().st_mtime_ns
    with serve(repo, env) as server, server.client() as client:
        _wait_ready(client)
        assert "assembling" not in server.log_text()
    assert (repo / "tiny-stilts" / "1" / "bundle.json").stat().st_mtime_ns == stamp


def test_a_corrupted_shipped_artifact_stops_serve_and_leaves_the_repository_empty(
    artifact: Path, tmp_path: Path
) -> None:
    shipped = tmp_path / "shipped"
    broken = Path(shutil.copytree(artifact, shipped / "tiny-stilts"))
    (broken / "metrics.json").write_text("{}")
    repo = tmp_path / "models"
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYPROBE_")}
    env["POLYPROBE_ARTIFACTS_DIR"] = str(shipped)
    command = [sys.executable, "-m", "polyprobe", "serve", "--model-repo", str(repo), "--port", "0"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "metrics.json is corrupted" in result.stderr
    assert not any(repo.glob("*")), "nothing half-assembled is left to serve"
