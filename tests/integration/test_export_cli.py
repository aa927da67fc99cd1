"""`polyprobe export` as a user runs it: a real subprocess, a real checkpoint, a real bundle."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from export.bundle import load_bundle

pytestmark = pytest.mark.integration

PAWSX = Path(__file__).resolve().parents[3] / "shared" / "data" / "pawsx" / "dev"
RUN = {
    "recipe": "direct",
    "base_model": "none (tiny demo)",
    "target_task": "demo-paraphrase",
    "seeds": [0],
    "data_ids": {"train": "demo corpus, seen meaning keys"},
    "git_commit": "0123abc",
    "written_by_a_newer_trainer": {"anything": True},
}
METRICS = {"heldout": {"en": {"accuracy": 0.97, "n": 40}, "de": {"accuracy": 0.95, "n": 40}}}


def _polyprobe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "polyprobe", *args],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


@pytest.mark.needs_shared_data
@pytest.mark.skipif(not PAWSX.is_dir(), reason=f"needs the PAWS-X dev files in {PAWSX}")
def test_export_end_to_end_with_per_language_parity_and_provenance(
    demo_checkpoint, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    checkpoint = tmp_path / "run" / "checkpoint"
    shutil.copytree(demo_checkpoint.path, checkpoint)
    (checkpoint / "polyprobe_run.json").write_text(json.dumps(RUN), encoding="utf-8")
    (checkpoint / "metrics.json").write_text(json.dumps(METRICS), encoding="utf-8")
    out = tmp_path / "repo" / "demo" / "7"
    done = _polyprobe(
        "export",
        str(checkpoint),
        "--out",
        str(out),
        "--name",
        "demo",
        "--version",
        "7",
        "--precision",
        "fp32,fp16,int8",
        "--parity-dir",
        str(PAWSX),
        "--parity-per-language",
        "8",
        # An impossible int8 gate: the variant must be refused, with the reason, and left out.
        "--gate",
        "int8.max_abs_logit_diff=1e-6",
    )
    assert done.returncode == 0, done.stderr
    assert "parity sample: ids 1500-1999" in done.stdout
    assert "fp32: model.optimized.onnx" in done.stdout and "fp16: model.fp16.onnx" in done.stdout
    assert "  ja: n 8, max |diff|" in done.stdout and "accuracy +" in done.stdout
    assert "not written: int8 failed its parity gate on 56 inputs: max |logit diff|" in done.stdout
    assert f"wrote bundle demo/7 to {out}" in done.stdout

    manifest = load_bundle(out)
    assert [m.precision for m in manifest.models] == ["fp32", "fp16"]
    assert not (out / "model.int8.onnx").exists()
    fp16 = manifest.variant("fp16")
    assert fp16 is not None and fp16.parity is not None
    assert sorted(fp16.parity.per_language) == ["de", "en", "es", "fr", "ja", "ko", "zh"]
    for result in fp16.parity.per_language.values():
        assert result["n"] == 8 and result["n_labelled"] == 8
        assert result["accuracy_delta"] == result["accuracy"] - result["accuracy_reference"]
    provenance = manifest.provenance
    assert provenance.training_run == RUN and provenance.code_version == "0123abc"
    assert provenance.recipe == "direct" and provenance.source == str(checkpoint)
    assert provenance.exporter.startswith("optimum-onnx")
    (evaluation,) = manifest.evaluation
    assert evaluation.per_language["de"].accuracy == 0.95

    card = (out / "README.md").read_text(encoding="utf-8")
    assert "# demo (version 7)" in card and "| code version | 0123abc |" in card
    assert "| de | 40 | 95.0 |" in card  # training's per-language result
    assert "| ja | 8 |" in card  # the parity table
    assert "int8 failed its parity gate" in card and "## Intended use and limits" in card


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--precision", "int8"], "--precision takes fp32 (always)"),
        (["--precision", "fp32,int4"], "--precision takes fp32 (always)"),
        (
            ["--parity-data", "/nonexistent/de.jsonl"],
            "parity data not found: /nonexistent/de.jsonl",
        ),
        (["--parity-ids", "0-9"], "--parity-ids/--parity-per-language need --parity-data"),
        (["--gate", "int8.speed=2"], "gate override 'int8.speed=2' must be GATE.FIELD=VALUE"),
    ],
)
def test_export_refuses_bad_arguments_before_exporting(
    demo_checkpoint, tmp_path: Path, args: list[str], message: str
) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "m" / "1"
    done = _polyprobe("export", str(demo_checkpoint.path), "--out", str(out), *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert not out.exists() and not out.with_name("1.staging").exists()


def test_export_of_a_folder_that_is_no_checkpoint_says_so(tmp_path: Path) -> None:
    done = _polyprobe("export", str(tmp_path), "--out", str(tmp_path / "m" / "1"))
    assert done.returncode == 2
    assert f"{tmp_path} is not a checkpoint (no config.json)" in done.stderr
