from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings, unknown_environment_variables


def test_defaults_need_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in __import__("os").environ if k.startswith("POLYPROBE_")]:
        monkeypatch.delenv(key)
    settings = Settings()
    assert settings.model_repo == Path("models")
    assert settings.on_overlength == "truncate"
    assert settings.device == "auto"


def test_environment_uses_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLYPROBE_MODEL_REPO", "/srv/models")
    monkeypatch.setenv("POLYPROBE_MAX_INPUTS_PER_REQUEST", "8")
    monkeypatch.setenv("POLYPROBE_ON_OVERLENGTH", "reject")
    settings = Settings()
    assert settings.model_repo == Path("/srv/models")
    assert settings.max_inputs_per_request == 8
    assert settings.on_overlength == "reject"


def test_explicit_values_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLYPROBE_PORT", "9000")
    assert Settings(port=9100).port == 9100


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        ("POLYPROBE_PORT", "eighty", "port"),
        ("POLYPROBE_ON_OVERLENGTH", "drop", "on_overlength"),
        ("POLYPROBE_MAX_TEXT_CHARS", "0", "max_text_chars"),
        ("POLYPROBE_DEVICE", "tpu", "device"),
    ],
)
def test_bad_values_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, key: str, value: str, field: str
) -> None:
    monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match=field):
        Settings()


def test_unknown_variables_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLYPROBE_MODEL_REPOSITORY", "typo")
    monkeypatch.setenv("POLYPROBE_PORT", "8000")
    assert unknown_environment_variables() == ["POLYPROBE_MODEL_REPOSITORY"]
