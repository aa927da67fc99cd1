"""deploy/k8s: Kubernetes' own schemas, and agreement with the service they deploy.

kubeconform is neither pip- nor apt-installable here; `kubernetes-validate` checks the same
OpenAPI schemas (strict: unknown fields are errors). RayService is a KubeRay CRD that no schema
here covers, so its pod templates are validated as PodTemplates and its Serve config against
Ray's own schema (when Ray is installed) and the service's code.
"""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from service.app import create_app
from service.metrics import ServiceMetrics
from service.ray_serve import APP_NAME, DEPLOYMENT_NAME
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PLAIN = ROOT / "deploy" / "k8s" / "deployment"
KUBERAY = ROOT / "deploy" / "k8s" / "kuberay" / "rayservice.yaml"
# The oldest version the manifests claim (preStop `sleep` needs 1.30) and the newest known.
KUBERNETES_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
NOT_RESOURCES = {"kustomization.yaml", "prometheus-adapter-values.yaml"}


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text("utf-8")) if doc]


def plain() -> dict[str, dict[str, Any]]:
    """Every resource of the Deployment variant, by kind (one of each)."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(PLAIN.glob("*.yaml")):
        if path.name in NOT_RESOURCES:
            continue
        for doc in documents(path):
            assert doc["kind"] not in found, f"two {doc['kind']}s"
            found[doc["kind"]] = doc
    return found


def rayservice() -> dict[str, Any]:
    (doc,) = documents(KUBERAY)
    return doc


def ray_pod_templates() -> list[dict[str, Any]]:
    cluster = rayservice()["spec"]["rayClusterConfig"]
    return [cluster["headGroupSpec"]["template"]] + [
        group["template"] for group in cluster["workerGroupSpecs"]
    ]


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = plain()["Deployment"]["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    (only,) = pod_spec()["containers"]
    return dict(only)


def env_of(entry: dict[str, Any]) -> dict[str, str]:
    return {var["name"]: var["value"] for var in entry.get("env", []) if "value" in var}


def service_get_routes(tmp_path: Path) -> set[str]:
    """The paths the service answers GET on, from its OpenAPI schema (routers included)."""
    app = create_app(Settings(model_repo=tmp_path, build_demo_if_empty=False))
    return {path for path, methods in app.openapi()["paths"].items() if "get" in methods}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_plain_manifest_validates_strictly(version: str) -> None:
    resources = plain()
    assert set(resources) == {
        "PersistentVolumeClaim",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    for doc in resources.values():
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_rayservice_pod_templates_validate_strictly(version: str) -> None:
    for template in ray_pod_templates():
        as_resource = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": "polyprobe"},
            "template": template,
        }
        kubernetes_validate.validate(as_resource, version, strict=True)


def test_a_schema_violation_is_caught() -> None:
    broken = plain()["Deployment"]
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def test_kustomization_lists_every_resource_file() -> None:
    (kustomization,) = documents(PLAIN / "kustomization.yaml")
    on_disk = {p.name for p in PLAIN.glob("*.yaml")} - NOT_RESOURCES
    assert sorted(kustomization["resources"]) == sorted(on_disk)


def test_probes_hit_the_service_health_routes(tmp_path: Path) -> None:
    routes = service_get_routes(tmp_path)
    probes = {kind: container()[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe")}
    probes["readinessProbe"] = container()["readinessProbe"]["httpGet"]
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["startupProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert {probe["path"] for probe in probes.values()} <= routes
    assert {probe["port"] for probe in probes.values()} == {"http"}


def test_ports_agree_from_settings_to_service() -> None:
    (port,) = container()["ports"]
    env = env_of(container())
    assert port["name"] == "http"
    assert port["containerPort"] == int(env["POLYPROBE_PORT"])
    assert env["POLYPROBE_HOST"] == "0.0.0.0"
    annotations = plain()["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == port["containerPort"]
    assert annotations["prometheus.io/path"] == "/metrics"
    (service_port,) = plain()["Service"]["spec"]["ports"]
    assert service_port["targetPort"] == port["name"]


def test_selectors_pick_the_deployment_pods() -> None:
    resources = plain()
    deployment = resources["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = [
        deployment["spec"]["selector"]["matchLabels"],
        resources["Service"]["spec"]["selector"],
        resources["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        *(c["labelSelector"]["matchLabels"] for c in pod_spec()["topologySpreadConstraints"]),
    ]
    for selector in selectors:
        assert selector.items() <= labels.items(), selector


def test_environment_names_and_values_are_real_settings() -> None:
    containers = [container()] + [
        c for template in ray_pod_templates() for c in template["spec"]["containers"]
    ]
    for entry in containers:
        env = env_of(entry)
        polyprobe = {k: v for k, v in env.items() if k.startswith("POLYPROBE_")}
        assert polyprobe, entry["name"]
        fields = {
            name.removeprefix("POLYPROBE_").lower(): value for name, value in polyprobe.items()
        }
        assert set(fields) <= set(Settings.model_fields), sorted(
            set(fields) - set(Settings.model_fields)
        )
        # The values parse as the service would parse them from the environment.
        Settings(**fields)  # type: ignore[arg-type]


def test_model_repository_is_the_read_only_volume() -> None:
    env = env_of(container())
    mounts = {m["name"]: m for m in container()["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    models = mounts["models"]
    assert models["mountPath"] == env["POLYPROBE_MODEL_REPO"]
    assert models["readOnly"] is True
    claim = volumes["models"]["persistentVolumeClaim"]
    assert claim["claimName"] == plain()["PersistentVolumeClaim"]["metadata"]["name"]
    keys = mounts["api-keys"]["mountPath"]
    assert env["POLYPROBE_API_KEYS_FILE"].startswith(keys + "/")
    assert container()["securityContext"]["readOnlyRootFilesystem"] is True
    assert "tmp" in mounts and "emptyDir" in volumes["tmp"]


def test_termination_grace_outlasts_prestop_and_the_drain_deadline() -> None:
    env = env_of(container())
    drain = int(env["POLYPROBE_SHUTDOWN_TIMEOUT_S"])
    pre_stop = container()["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod_spec()["terminationGracePeriodSeconds"] > pre_stop + drain


def dockerfile_uid() -> int:
    match = re.search(r"useradd .*--uid (\d+)", (ROOT / "Dockerfile").read_text("utf-8"))
    assert match, "the Dockerfile creates no user with a fixed uid"
    return int(match.group(1))


def test_pods_run_as_the_image_non_root_user() -> None:
    for spec in [pod_spec()] + [t["spec"] for t in ray_pod_templates()]:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert pod["runAsUser"] == dockerfile_uid() != 0
        assert pod["seccompProfile"]["type"] == "RuntimeDefault"
        for entry in spec["containers"]:
            security = entry["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            resources = entry["resources"]
            assert {"cpu", "memory"} <= resources["requests"].keys()
            assert "memory" in resources["limits"]


def test_hpa_scales_the_deployment_on_the_queue_metric_the_adapter_serves() -> None:
    resources = plain()
    hpa = resources["HorizontalPodAutoscaler"]["spec"]
    deployment = resources["Deployment"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": deployment["apiVersion"],
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    (metric,) = hpa["metrics"]
    assert metric["type"] == "Pods"
    (values,) = documents(PLAIN / "prometheus-adapter-values.yaml")
    (rule,) = values["rules"]["custom"]
    assert metric["pods"]["metric"]["name"] == rule["name"]["as"]
    series = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{", rule["seriesQuery"])
    assert series, rule["seriesQuery"]
    exposed = {family.name for family in ServiceMetrics().registry.collect()}
    assert series.group(1) in exposed
    assert re.fullmatch(rule["name"]["matches"], series.group(1))
    # A drain may take a pod while the HPA keeps the floor: the PDB must leave one serving.
    assert hpa["minReplicas"] > resources["PodDisruptionBudget"]["spec"]["maxUnavailable"]
    assert hpa["minReplicas"] <= hpa["maxReplicas"]


def serve_config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(rayservice()["spec"]["serveConfigV2"])
    return config


def test_rayservice_serves_the_projects_ray_application() -> None:
    (application,) = serve_config()["applications"]
    assert application["name"] == APP_NAME
    assert application["route_prefix"] == "/"
    module_name, attribute = application["import_path"].split(":")
    builder = getattr(importlib.import_module(module_name), attribute)
    assert callable(builder)
    (deployment,) = application["deployments"]
    assert deployment["name"] == DEPLOYMENT_NAME
    autoscaling = deployment["autoscaling_config"]
    assert 0 < autoscaling["min_replicas"] <= autoscaling["max_replicas"]
    assert autoscaling["target_ongoing_requests"] <= deployment["max_ongoing_requests"]
    workers = rayservice()["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    for group in workers:
        grace = group["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > deployment["graceful_shutdown_timeout_s"]


def test_rayservice_ray_version_is_the_pinned_extra() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    (pin,) = pyproject["project"]["optional-dependencies"]["ray"]
    assert pin == f"ray[serve]=={rayservice()['spec']['rayClusterConfig']['rayVersion']}"


def test_serve_config_validates_against_rays_schema() -> None:
    schema = pytest.importorskip(
        "ray.serve.schema", reason="Ray's Serve schema needs the ray extra: polyprobe[ray]"
    )
    schema.ServeDeploySchema.model_validate(serve_config())
