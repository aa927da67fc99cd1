from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from export.bundle import BundleManifest

pytest.importorskip(
    "torch", reason="integration tests build real models: install polyprobe[export]"
)


@pytest.fixture(scope="session")
def demo_checkpoint(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from training.demo.builder import DemoConfig, build_demo_checkpoint

    return build_demo_checkpoint(
        tmp_path_factory.mktemp("demo-checkpoint"), DemoConfig(seed=0), progress=False
    )


@pytest.fixture(scope="session")
def demo_bundle(tmp_path_factory: pytest.TempPathFactory, demo_checkpoint) -> Path:  # type: ignore[no-untyped-def]
    from export.demo_bundle import demo_bundle_from_checkpoint

    bundle_dir = tmp_path_factory.mktemp("bundles") / "demo" / "1"
    demo_bundle_from_checkpoint(demo_checkpoint, bundle_dir)
    return bundle_dir


def copy_bundle(source: Path, repo: Path, name: str, version: str) -> Path:
    """A copy of a bundle under another name/version (only bundle.json's name/version change)."""
    target = repo / name / version
    shutil.copytree(source, target)
    manifest = BundleManifest.model_validate_json((target / "bundle.json").read_text("utf-8"))
    renamed = manifest.model_copy(update={"name": name, "version": version})
    (target / "bundle.json").write_text(renamed.model_dump_json(indent=2), encoding="utf-8")
    return target
