"""Trained artifacts: the few megabytes a LoRA training run adds to its base encoder.

An artifact directory holds each phase's adapter file (`<phase>.safetensors`, the target's with the
classifier head), the run's manifest and evaluation, and `artifact.json` listing every file's
sha256. Assembly checks those hashes, merges the adapters into the base encoder phase by phase,
and exports the result through the same gated path as any checkpoint, so a bundle assembled on a
user's machine is verified there against the checkpoint it rebuilt.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from export.bundle import BundleManifest, sha256_of

# The artifacts the project trained and ships inside the package (see that folder's README).
SHIPPED_ARTIFACTS = Path(__file__).resolve().parent.parent / "polyprobe" / "artifacts"
ARTIFACT_MANIFEST = "artifact.json"
RUN_MANIFEST = "polyprobe_run.json"
METRICS = "metrics.json"
TRAINING_LOGITS = "training_logits.json"
PHASE_ORDER = ("intermediate", "target")
# How far an assembled checkpoint's logits may drift from the training-time checkpoint's on the
# built-in sample: merging the same adapters into the same base is exact up to float rounding.
TRAINING_LOGITS_TOLERANCE = 1e-3
_CHECK_MAX_LENGTH = 128
_CHECK_INPUTS = ("input_ids", "attention_mask")


AdapterDtype = Literal["float32", "float16"]


class ArtifactError(ValueError):
    """An artifact directory that cannot be assembled; the message says what to fix."""


class ArtifactManifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    base_model: str
    lora_rank: int = Field(gt=0)
    # How the LoRA matrices are stored (the classifier head always stays as trained); artifacts
    # packed before this field existed are float32.
    adapter_dtype: AdapterDtype = "float32"
    task: str
    labels: list[str] = Field(min_length=2)
    phases: list[str] = Field(min_length=1)
    files: dict[str, str]


def pack_run(
    run_dir: Path, out_dir: Path, name: str, *, adapter_dtype: AdapterDtype = "float32"
) -> tuple[ArtifactManifest, float]:
    """Collect a finished LoRA seed directory (`seed-N/`) into an artifact directory, its LoRA
    matrices stored as `adapter_dtype`; returns the manifest and the rebuilt checkpoint's drift.

    The artifact is checked before it is written: it is assembled on the run's base exactly as a
    user's machine will assemble it, and refused when its logits on the built-in sample drift from
    the training-time checkpoint's by more than TRAINING_LOGITS_TOLERANCE (float16 storage rounds
    the adapters, so this is where its cost is measured). An existing `out_dir` must be an
    artifact; it is replaced whole.
    """
    adapters = run_dir / "adapters"
    phases = [p for p in PHASE_ORDER if (adapters / f"{p}.safetensors").is_file()]
    if "target" not in phases:
        raise ArtifactError(
            f"{adapters}/target.safetensors is missing: pack a run trained with lora_rank set"
        )
    run_manifest = run_dir / "checkpoint" / RUN_MANIFEST
    metrics = run_dir / METRICS
    for required in (run_manifest, metrics):
        if not required.is_file():
            raise ArtifactError(f"{required} is missing: pack a finished seed directory")
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / ARTIFACT_MANIFEST).is_file():
        raise ArtifactError(
            f"{out_dir} holds files but no {ARTIFACT_MANIFEST}: give an empty folder or an "
            "artifact to replace"
        )
    run = json.loads(run_manifest.read_text())
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-packing-", dir=out_dir.parent))
    # mkdtemp makes it private (0700); the artifact is as readable as the folder it lands in.
    staging.chmod(out_dir.parent.stat().st_mode & 0o777)
    try:
        manifest = _write_artifact(staging, run_dir, run, name, phases, adapter_dtype)
        base = Path(_resolve_base(manifest.base_model))
        with tempfile.TemporaryDirectory(prefix="polyprobe-pack-check-") as tmp:
            drift = _checkpoint(staging, manifest, base, Path(tmp) / "checkpoint")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
        return manifest, drift
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_artifact(
    out_dir: Path,
    run_dir: Path,
    run: dict[str, Any],
    name: str,
    phases: list[str],
    adapter_dtype: AdapterDtype,
) -> ArtifactManifest:
    from training.model import copy_adapter

    for phase in phases:
        file_name = f"{phase}.safetensors"
        copy_adapter(run_dir / "adapters" / file_name, out_dir / file_name, adapter_dtype)
    for file_name, source in {
        RUN_MANIFEST: run_dir / "checkpoint" / RUN_MANIFEST,
        METRICS: run_dir / METRICS,
    }.items():
        shutil.copyfile(source, out_dir / file_name)
    logits = _sample_logits(run_dir / "checkpoint")
    (out_dir / TRAINING_LOGITS).write_text(json.dumps({"logits": logits.tolist()}) + "\n")
    files = [f"{p}.safetensors" for p in phases] + [RUN_MANIFEST, METRICS, TRAINING_LOGITS]
    manifest = ArtifactManifest(
        name=name,
        base_model=str(run["config"]["base_model"]),
        lora_rank=int(run["config"]["lora_rank"]),
        adapter_dtype=adapter_dtype,
        task=str(run["task"]),
        labels=[str(label) for label in run["labels"]],
        phases=phases,
        files={file_name: sha256_of(out_dir / file_name) for file_name in sorted(files)},
    )
    (out_dir / ARTIFACT_MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
    return manifest


def _resolve_base(name: str) -> str:
    from training.pipeline import resolve_base_model

    return resolve_base_model(name)


def read_artifact(artifact_dir: Path) -> ArtifactManifest:
    """The artifact's manifest, after checking that every file it lists is there, unchanged."""
    path = artifact_dir / ARTIFACT_MANIFEST
    try:
        manifest = ArtifactManifest.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise ArtifactError(f"{path} is missing: {artifact_dir} is not an artifact") from None
    except ValidationError as exc:
        raise ArtifactError(f"{path} is not a valid artifact manifest: {exc}") from None
    for file_name, expected in manifest.files.items():
        file_path = artifact_dir / file_name
        if not file_path.is_file():
            raise ArtifactError(f"{file_path} is missing (listed in {ARTIFACT_MANIFEST})")
        actual = sha256_of(file_path)
        if actual != expected:
            raise ArtifactError(
                f"{file_path} is corrupted: its sha256 is {actual[:12]}..., {ARTIFACT_MANIFEST} "
                f"records {expected[:12]}...; restore it (e.g. git checkout -- {file_path})"
            )
    missing = [p for p in manifest.phases if f"{p}.safetensors" not in manifest.files]
    if missing:
        raise ArtifactError(f"{path} lists phases {missing} without their adapter files")
    if TRAINING_LOGITS not in manifest.files:
        raise ArtifactError(
            f"{path} lists no {TRAINING_LOGITS}: repack the run with `polyprobe artifacts pack`"
        )
    return manifest


def _sample_logits(checkpoint_dir: Path) -> np.ndarray:
    """The checkpoint's logits on the built-in multilingual parity sample."""
    from export.parity import builtin_sample, encode_sample, reference_logits

    encoded = encode_sample(
        builtin_sample(), checkpoint_dir / "tokenizer.json", _CHECK_MAX_LENGTH, _CHECK_INPUTS
    )
    return reference_logits(checkpoint_dir, encoded)[0]


def check_against_training(artifact_dir: Path, checkpoint_dir: Path) -> float:
    """Max |logit difference| between a rebuilt checkpoint and the training-time checkpoint on
    the built-in sample; raises ArtifactError beyond TRAINING_LOGITS_TOLERANCE."""
    recorded = np.asarray(
        json.loads((artifact_dir / TRAINING_LOGITS).read_text())["logits"], dtype=np.float32
    )
    rebuilt = _sample_logits(checkpoint_dir)
    if rebuilt.shape != recorded.shape:
        raise ArtifactError(
            f"{checkpoint_dir} gives logits of shape {rebuilt.shape}, the training-time checkpoint "
            f"{recorded.shape}: the base model is not the one the adapters were trained on"
        )
    drift = float(np.max(np.abs(rebuilt - recorded)))
    if drift > TRAINING_LOGITS_TOLERANCE:
        raise ArtifactError(
            f"the checkpoint rebuilt from {artifact_dir} differs from the training-time checkpoint "
            f"by up to {drift:.3g} in its logits (tolerance {TRAINING_LOGITS_TOLERANCE}): the base "
            "model is not the one the adapters were trained on"
        )
    return drift


def assemble_checkpoint(artifact_dir: Path, base_model_dir: Path, out_dir: Path) -> Path:
    """Rebuild the training run's classifier checkpoint from the base encoder and the adapters."""
    _checkpoint(artifact_dir, read_artifact(artifact_dir), base_model_dir, out_dir)
    return out_dir


def assemble_bundle(
    artifact_dir: Path, base_model_dir: Path | None, bundle_dir: Path, *, version: str = "1"
) -> BundleManifest:
    """Assemble the checkpoint in a scratch folder and export it as a parity-checked bundle, on
    `base_model_dir` or (None) the base the artifact names."""
    return _bundle(artifact_dir, read_artifact(artifact_dir), base_model_dir, bundle_dir, version)


def _checkpoint(
    artifact_dir: Path, manifest: ArtifactManifest, base_model_dir: Path, out_dir: Path
) -> float:
    """Write the rebuilt checkpoint to `out_dir`; returns its drift from the training-time one."""
    from training.model import (
        apply_lora,
        build_classifier,
        load_encoder,
        load_tokenizer,
        read_adapter,
        write_classifier,
    )

    encoder = load_encoder(base_model_dir)
    head: dict[str, Any] = {}
    for phase in manifest.phases:
        lora, head, rank = read_adapter(artifact_dir / f"{phase}.safetensors")
        if rank != manifest.lora_rank:
            raise ArtifactError(
                f"{artifact_dir / phase}.safetensors has rank {rank}, "
                f"{ARTIFACT_MANIFEST} says {manifest.lora_rank}"
            )
        try:
            encoder = apply_lora(encoder, lora, rank)
        except ValueError as exc:
            raise ArtifactError(f"{artifact_dir / phase}.safetensors: {exc}") from None
    if not head:
        raise ArtifactError(f"{artifact_dir}/target.safetensors carries no classifier head")
    classifier = build_classifier(encoder, head, manifest.labels)
    run = json.loads((artifact_dir / RUN_MANIFEST).read_text())
    write_classifier(classifier, load_tokenizer(base_model_dir), out_dir, run)
    shutil.copyfile(artifact_dir / METRICS, out_dir / METRICS)
    return check_against_training(artifact_dir, out_dir)


def _bundle(
    artifact_dir: Path,
    manifest: ArtifactManifest,
    base_model_dir: Path | None,
    bundle_dir: Path,
    version: str,
) -> BundleManifest:
    from export.build import build_bundle
    from export.parity import builtin_sample
    from export.provenance import read_provenance, read_training_evaluation

    base = base_model_dir or Path(_resolve_base(manifest.base_model))
    with tempfile.TemporaryDirectory(prefix="polyprobe-assemble-") as tmp:
        checkpoint = Path(tmp) / "checkpoint"
        _checkpoint(artifact_dir, manifest, base, checkpoint)
        source = f"artifact {artifact_dir} on base {manifest.base_model}"
        return build_bundle(
            checkpoint,
            bundle_dir,
            name=manifest.name,
            version=version,
            task="pair-classification",
            provenance=read_provenance(checkpoint, source=source, target_task=manifest.task),
            parity_sample=builtin_sample(),
            evaluation=read_training_evaluation(checkpoint, manifest.task),
        )


def find_artifacts(root: Path) -> list[Path]:
    """The artifact directories directly under `root`, by name (none if `root` does not exist)."""
    if not root.is_dir():
        return []
    return sorted(path for path in root.iterdir() if (path / ARTIFACT_MANIFEST).is_file())


def assemble_repository(
    artifact_dirs: Sequence[Path],
    model_repo: Path,
    *,
    report: Callable[[str], None] = print,
) -> list[BundleManifest]:
    """Assemble every artifact as `<model_repo>/<name>/1`, on the base each names.

    All or nothing: bundles are built in a scratch folder beside the repository and moved in only
    when every one has passed its parity gate, so a failed start leaves the repository as it was.
    """
    manifests = [read_artifact(path) for path in artifact_dirs]
    model_repo.mkdir(parents=True, exist_ok=True)
    scratch = Path(
        tempfile.mkdtemp(prefix=f".{model_repo.name}-assembling-", dir=model_repo.parent)
    )
    try:
        built = []
        for i, (artifact_dir, manifest) in enumerate(zip(artifact_dirs, manifests, strict=True)):
            started = time.monotonic()
            report(
                f"[{i + 1}/{len(manifests)}] {manifest.name}: merging {'+'.join(manifest.phases)} "
                f"adapters onto {manifest.base_model}, exporting, checking parity"
            )
            bundle = _bundle(artifact_dir, manifest, None, scratch / manifest.name / "1", "1")
            report(
                f"[{i + 1}/{len(manifests)}] {manifest.name}: done in {time.monotonic() - started:.0f} s"
            )
            built.append(bundle)
        for manifest in manifests:
            shutil.move(scratch / manifest.name, model_repo / manifest.name)
        return built
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
