from __future__ import annotations

from pathlib import Path

from service.repository import discover, version_key


def test_versions_sort_numerically_not_lexically() -> None:
    assert sorted(["10", "9", "2.1", "2"], key=version_key) == ["2", "2.1", "9", "10"]


def test_discovery_skips_what_is_not_a_model_version(tmp_path: Path) -> None:
    for path in [
        "alpha/1",
        "alpha/10",
        "alpha/9",
        "alpha/1.staging",
        "alpha/latest",
        "beta/2",
        ".hidden/1",
        "bad name/1",
    ]:
        (tmp_path / path).mkdir(parents=True)
    (tmp_path / "README.md").write_text("not a model", encoding="utf-8")
    found = discover(tmp_path)
    assert sorted(found) == ["alpha", "beta"]
    assert [loc.version for loc in found["alpha"]] == ["1", "9", "10"]
    assert found["alpha"][-1].path == tmp_path / "alpha" / "10"


def test_missing_repository_is_empty(tmp_path: Path) -> None:
    assert discover(tmp_path / "absent") == {}
