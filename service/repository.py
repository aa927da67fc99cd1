"""The model repository on disk (`<repo>/<name>/<version>/`) and the models loaded from it."""

from __future__ import annotations

import itertools
import logging
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from export.bundle import (
    BundleError,
    BundleManifest,
    ModelVariant,
    check_graph_inputs,
    read_manifest,
    verify_files,
)
from export.features import BundleTokenizer

from service.backend import (
    CUDA,
    BackendFactory,
    BackendLoadError,
    InferenceBackend,
    choose_variant,
    uses_cuda,
)
from service.settings import Settings

logger = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_VERSION = re.compile(r"[0-9]+(\.[0-9]+)*")


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def is_model_name(name: str) -> bool:
    """Whether `name` may name a model directory: no separators, no `..`, no hidden directory."""
    return _NAME.fullmatch(name) is not None


def is_version(version: str) -> bool:
    return _VERSION.fullmatch(version) is not None


@dataclass(frozen=True)
class ModelLocation:
    name: str
    version: str
    path: Path


def discover(model_repo: Path) -> dict[str, list[ModelLocation]]:
    """Every `<name>/<version>/` directory, versions sorted oldest first.

    Directories that are not valid names or numeric versions (e.g. a `.staging` folder an export is
    still writing) are skipped with a log line rather than served.
    """
    found: dict[str, list[ModelLocation]] = {}
    if not model_repo.is_dir():
        return found
    for model_dir in sorted(model_repo.iterdir()):
        if not model_dir.is_dir() or model_dir.name.startswith("."):
            continue
        if not is_model_name(model_dir.name):
            logger.warning("skipping %s: not a valid model name", model_dir)
            continue
        versions = []
        for version_dir in model_dir.iterdir():
            if version_dir.is_dir() and is_version(version_dir.name):
                versions.append(ModelLocation(model_dir.name, version_dir.name, version_dir))
            elif version_dir.is_dir():
                logger.warning("skipping %s: versions are numbers like 1 or 2.1", version_dir)
        if versions:
            found[model_dir.name] = sorted(versions, key=lambda loc: version_key(loc.version))
    return found


def signature(path: Path) -> tuple[tuple[str, int, int], ...]:
    """Name, size and mtime of every file in a version directory: changes when a copy progresses.

    A version refused while its files were still being copied is tried again once this changes.
    """
    files = []
    for child in sorted(path.iterdir()):
        try:
            stat = child.stat()
        except OSError:  # deleted between listing and stat: the next look sees the new state
            continue
        files.append((child.name, stat.st_size, stat.st_mtime_ns))
    return tuple(files)


class ModelState(StrEnum):
    READY = "ready"
    FAILED = "failed"


_load_order = itertools.count()


@dataclass(frozen=True)
class LoadedModel:
    location: ModelLocation
    manifest: BundleManifest
    variant: ModelVariant
    tokenizer: BundleTokenizer
    backend: InferenceBackend
    # Which of two loaded versions of a name is the newer one: versions alone cannot say (a
    # rollback serves a lower number after a higher one).
    load_order: int = field(default_factory=lambda: next(_load_order), compare=False)

    @property
    def name(self) -> str:
        return self.location.name

    @property
    def version(self) -> str:
        return self.location.version


@dataclass(frozen=True)
class ModelEntry:
    """What the repository knows about one model name: its versions and the served one's state."""

    name: str
    versions: list[str]
    state: ModelState
    model: LoadedModel | None = None
    # Why the model does not serve (FAILED), or why a newer version was refused while an older
    # one keeps serving (READY with refused_version set).
    error: str | None = None
    refused_version: str | None = None


def load_model(
    location: ModelLocation, settings: Settings, backend_factory: BackendFactory
) -> LoadedModel:
    """Verify a bundle and open it; raises BundleError/BackendLoadError saying what is wrong."""
    manifest = read_manifest(location.path)
    _check_file_kinds(location.path, manifest)
    verify_files(location.path, manifest)
    if (manifest.name, manifest.version) != (location.name, location.version):
        raise BundleError(
            location.path,
            f"bundle.json says {manifest.name}/{manifest.version} but the bundle sits in "
            f"{location.name}/{location.version}",
        )
    variant = choose_variant(
        manifest, on_cuda=uses_cuda(settings.device), forced=settings.precision
    )
    backend = backend_factory(location.path / variant.path, settings)
    check_graph_inputs(location.path, manifest, backend.input_names)
    tokenizer = BundleTokenizer.from_file(
        location.path / manifest.tokenizer.path,
        max_length=manifest.max_sequence_length,
        input_names=backend.input_names,
        pad_to_multiple_of=8 if backend.provider == CUDA else None,
    )
    return LoadedModel(location, manifest, variant, tokenizer, backend)


def _check_file_kinds(bundle_dir: Path, manifest: BundleManifest) -> None:
    """The serving path parses only ONNX graphs and the JSON tokenizer, whatever the manifest says.

    The bundle format also admits `.md` files (model cards); those are hashed, never parsed.
    """
    if not manifest.tokenizer.path.endswith(".json"):
        raise BundleError(bundle_dir, f"tokenizer {manifest.tokenizer.path!r} is not a .json file")
    for variant in manifest.models:
        if not variant.path.endswith(".onnx"):
            raise BundleError(bundle_dir, f"model file {variant.path!r} is not an .onnx file")
        for extra in variant.external_data:
            if not extra.path.endswith(".onnx_data"):
                raise BundleError(
                    bundle_dir, f"external data {extra.path!r} of {variant.path} is not .onnx_data"
                )


LOAD_ERRORS = (BundleError, BackendLoadError, OSError, ValueError)
