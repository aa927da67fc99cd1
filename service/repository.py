"""The model repository on disk (`<repo>/<name>/<version>/`) and the models loaded from it."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from export.bundle import BundleError, BundleManifest, ModelVariant, check_graph_inputs, load_bundle
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

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_VERSION = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


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
        if not _NAME.match(model_dir.name):
            logger.warning("skipping %s: not a valid model name", model_dir)
            continue
        versions = []
        for version_dir in model_dir.iterdir():
            if version_dir.is_dir() and _VERSION.match(version_dir.name):
                versions.append(ModelLocation(model_dir.name, version_dir.name, version_dir))
            elif version_dir.is_dir():
                logger.warning("skipping %s: versions are numbers like 1 or 2.1", version_dir)
        if versions:
            found[model_dir.name] = sorted(versions, key=lambda loc: version_key(loc.version))
    return found


class ModelState(StrEnum):
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class LoadedModel:
    location: ModelLocation
    manifest: BundleManifest
    variant: ModelVariant
    tokenizer: BundleTokenizer
    backend: InferenceBackend

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
    error: str | None = None


def load_model(
    location: ModelLocation, settings: Settings, backend_factory: BackendFactory
) -> LoadedModel:
    """Verify a bundle and open it; raises BundleError/BackendLoadError saying what is wrong."""
    manifest = load_bundle(location.path)
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


def load_repository(settings: Settings, backend_factory: BackendFactory) -> dict[str, ModelEntry]:
    """Load the highest version of every model; a broken one is recorded, the others still load."""
    entries: dict[str, ModelEntry] = {}
    for name, locations in discover(settings.model_repo).items():
        newest = locations[-1]
        versions = [loc.version for loc in locations]
        try:
            model = load_model(newest, settings, backend_factory)
        except (BundleError, BackendLoadError, OSError, ValueError) as exc:
            logger.error("refusing model %s version %s: %s", name, newest.version, exc)
            entries[name] = ModelEntry(name, versions, ModelState.FAILED, error=str(exc))
            continue
        entries[name] = ModelEntry(name, versions, ModelState.READY, model=model)
    return entries
