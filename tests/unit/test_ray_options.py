"""`polyprobe serve --ray`: settings -> Ray Serve deployment options (no Ray needed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from service.ray_serve import DEPLOYMENT_NAME, deployment_options, for_replicas
from service.settings import Settings


def test_settings_become_replicas_autoscaling_and_resources() -> None:
    settings = Settings(
        ray_min_replicas=2,
        ray_max_replicas=6,
        ray_target_ongoing_requests=4,
        ray_max_ongoing_requests=16,
        ray_num_cpus=2,
        ray_num_gpus=0.25,
        ray_upscale_delay_s=5,
        ray_downscale_delay_s=120,
        shutdown_timeout_s=20,
    )
    assert deployment_options(settings) == {
        "name": DEPLOYMENT_NAME,
        "ray_actor_options": {"num_cpus": 2.0, "num_gpus": 0.25},
        "max_ongoing_requests": 16,
        "autoscaling_config": {
            "min_replicas": 2,
            "initial_replicas": 2,
            "max_replicas": 6,
            "target_ongoing_requests": 4.0,
            "upscale_delay_s": 5.0,
            "downscale_delay_s": 120.0,
        },
        "graceful_shutdown_timeout_s": 20,
    }


def test_scale_to_zero_still_starts_one_replica() -> None:
    options = deployment_options(Settings(ray_min_replicas=0))
    assert options["autoscaling_config"]["min_replicas"] == 0
    assert options["autoscaling_config"]["initial_replicas"] == 1


def test_min_above_max_is_refused_with_both_names() -> None:
    with pytest.raises(
        ValueError, match="MIN_REPLICAS \\(5\\) is above POLYPROBE_RAY_MAX_REPLICAS \\(2\\)"
    ):
        deployment_options(Settings(ray_min_replicas=5, ray_max_replicas=2))


def test_a_target_no_replica_can_reach_is_refused() -> None:
    with pytest.raises(ValueError, match="never scale down"):
        deployment_options(Settings(ray_target_ongoing_requests=64, ray_max_ongoing_requests=32))


def test_replicas_get_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = for_replicas(Settings(model_repo=Path("models"), api_keys_file=Path("keys.txt")))
    assert settings.model_repo == tmp_path / "models"
    assert settings.api_keys_file == tmp_path / "keys.txt"


def test_serve_ray_without_ray_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from polyprobe.cli import main

    (tmp_path / "demo" / "1").mkdir(parents=True)
    # None in sys.modules makes `import ray` fail as it does where Ray is not installed.
    monkeypatch.setitem(sys.modules, "ray", None)
    status = main(["serve", "--ray", "--port", "8123", "--model-repo", str(tmp_path)])
    assert status == 2
    assert "pip install 'polyprobe[ray]'" in capsys.readouterr().err


def test_serve_ray_refuses_port_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from polyprobe.cli import main

    (tmp_path / "demo" / "1").mkdir(parents=True)
    assert main(["serve", "--ray", "--port", "0", "--model-repo", str(tmp_path)]) == 2
    assert "--ray needs a fixed port" in capsys.readouterr().err
