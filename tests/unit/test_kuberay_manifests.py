"""The KubeRay manifests in cluster/: valid custom resources, the same Serve apps and settings.

No Kubernetes cluster: the custom resources are checked against the KubeRay CRDs by the shared
`validate-kuberay` tool, serveConfigV2 against Ray Serve's schema, the settings ConfigMap with
clara-ray's own settings loader.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from clara_ray.config.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
KINDS = {"raycluster.yaml": "RayCluster", "rayservice.yaml": "RayService", "rayjob.yaml": "RayJob"}
MANIFESTS = tuple(KINDS)
# The repository root's parent holds shared/ (see PEERS.md: "KubeRay CRDs, offline").
VALIDATOR = Path(__file__).resolve().parents[3] / "shared" / "tools" / "validate-kuberay"
SETTINGS_PATH = "/etc/clara-ray/settings.yaml"
SETTINGS_CONFIGMAP = "clara-ray-settings"


def documents(name: str) -> list[dict[str, Any]]:
    with (CLUSTER / name).open(encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def resource(name: str, kind: str) -> dict[str, Any]:
    found = [d for d in documents(name) if d.get("kind") == kind]
    assert len(found) == 1, f"{name}: expected one {kind}, found {len(found)}"
    return found[0]


def cluster_specs() -> dict[str, dict[str, Any]]:
    """The RayCluster spec of each manifest (a RayService's and a RayJob's embedded one)."""
    return {
        "raycluster.yaml": resource("raycluster.yaml", "RayCluster")["spec"],
        "rayservice.yaml": resource("rayservice.yaml", "RayService")["spec"]["rayClusterConfig"],
        "rayjob.yaml": resource("rayjob.yaml", "RayJob")["spec"]["rayClusterSpec"],
    }


def pod_templates(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    groups = {"head": spec["headGroupSpec"]["template"]}
    groups.update({g["groupName"]: g["template"] for g in spec.get("workerGroupSpecs", [])})
    return groups


def ray_container(template: dict[str, Any]) -> dict[str, Any]:
    return template["spec"]["containers"][0]  # KubeRay's Ray container is the first one


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def serve_config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(
        resource("rayservice.yaml", "RayService")["spec"]["serveConfigV2"]
    )
    return config


def settings_file(tmp_path: Path) -> Path:
    configmap = resource("clara-settings.yaml", "ConfigMap")
    assert configmap["metadata"]["name"] == SETTINGS_CONFIGMAP
    path = tmp_path / "settings.yaml"
    path.write_text(configmap["data"]["settings.yaml"], encoding="utf-8")
    return path


# -- the custom resources against the KubeRay CRDs ------------------------------------------


def test_custom_resources_pass_validate_kuberay_strict() -> None:
    if not VALIDATOR.is_file():
        pytest.fail(
            f"the KubeRay validator is missing: expected {VALIDATOR} "
            "(the shared/ folder beside the repository, see PEERS.md)"
        )
    paths = [str(CLUSTER / name) for name in MANIFESTS]
    proc = subprocess.run(
        [sys.executable, str(VALIDATOR), "--strict", *paths],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"validate-kuberay --strict failed:\n{output}"
    # Each file's custom resource was checked, not skipped as an unknown kind.
    for name, kind in KINDS.items():
        assert f"OK   {CLUSTER / name} {kind}/" in output, output
    assert "3 valid, 0 invalid" in output, output


# -- serveConfigV2 ---------------------------------------------------------------------------


def test_serve_config_v2_is_a_valid_serve_deploy_config() -> None:
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(serve_config())
    apps = {app.name: app for app in schema.applications}
    assert set(apps) == {"clara-api", "clara-inference"}
    assert apps["clara-api"].route_prefix == "/"
    assert apps["clara-api"].import_path == "serve.api:build_app"
    assert apps["clara-inference"].route_prefix == "/v2"
    assert apps["clara-inference"].import_path == "serve.inference:build_app"
    assert schema.http_options.host == "0.0.0.0"
    assert schema.http_options.port == 8000


def test_serve_config_v2_applications_are_serve_config_yaml_s() -> None:
    expected = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text(encoding="utf-8"))
    assert serve_config()["applications"] == expected["applications"]


# -- settings --------------------------------------------------------------------------------


def test_settings_configmap_loads_with_cluster_values(tmp_path: Path) -> None:
    settings = load_settings(settings_file(tmp_path), env={})
    assert settings.ray.address == "auto"
    assert settings.storage_uri is not None and settings.storage_uri.startswith("s3://")
    assert settings.dicom.host == "0.0.0.0"
    assert settings.dicom.reject_unknown_sources is True
    assert settings.serve.host == "0.0.0.0"
    assert settings.serve.port == 8000


@pytest.mark.parametrize("name", MANIFESTS)
def test_every_ray_pod_reads_the_settings_configmap(name: str, tmp_path: Path) -> None:
    path = settings_file(tmp_path)
    for group, template in pod_templates(cluster_specs()[name]).items():
        where = f"{name}, group {group}"
        container = ray_container(template)
        env = env_of(container)
        assert env.get("CLARA_RAY_CONFIG") == SETTINGS_PATH, where
        volumes = {v["name"]: v for v in template["spec"].get("volumes", [])}
        mounts = [
            m
            for m in container.get("volumeMounts", [])
            if volumes.get(m["name"], {}).get("configMap", {}).get("name") == SETTINGS_CONFIGMAP
        ]
        assert [m["mountPath"] for m in mounts] == [str(Path(SETTINGS_PATH).parent)], where
        # The pod's CLARA_RAY_* overrides are settings too: they must load over the file.
        overrides = {k: v for k, v in env.items() if k.startswith("CLARA_RAY_")}
        settings = load_settings(path, env=overrides)
        assert settings.storage_uri == env["CLARA_RAY_STORAGE_URI"], where


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayservice.yaml"])
def test_pods_that_serve_the_api_take_its_token_from_a_secret(name: str) -> None:
    """The API binds every interface there, which it refuses to do without a token."""
    for group, template in pod_templates(cluster_specs()[name]).items():
        tokens = [
            e for e in ray_container(template).get("env", [])
            if e["name"] == "CLARA_RAY_SERVE__API_TOKEN"
        ]  # fmt: skip
        assert [t.get("valueFrom") for t in tokens] == [
            {"secretKeyRef": {"name": "clara-ray-api", "key": "token"}}
        ], f"{name}, group {group}"


# -- the pods --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MANIFESTS)
def test_containers_still_run_kuberays_ray_start(name: str) -> None:
    """With ray.io/overwrite-container-cmd, a container without the generated command runs no Ray."""
    annotations = resource(name, KINDS[name])["metadata"].get("annotations", {})
    if annotations.get("ray.io/overwrite-container-cmd") != "true":
        for template in pod_templates(cluster_specs()[name]).values():
            assert "command" not in ray_container(template)
        return
    for group, template in pod_templates(cluster_specs()[name]).items():
        script = " ".join(ray_container(template).get("args", []))
        assert 'exec /bin/bash -c "$KUBERAY_GEN_RAY_START_CMD"' in script, f"{name}: {group}"
        assert ("clara-ray up" in script) == (group == "head"), f"{name}: {group}"


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayservice.yaml"])
def test_platform_head_exposes_dashboard_serve_and_dicom(name: str) -> None:
    spec = cluster_specs()[name]
    assert spec["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    head = spec["headGroupSpec"]["template"]
    ports = {p["name"]: p["containerPort"] for p in ray_container(head)["ports"]}
    assert ports["dashboard"] == 8265
    assert ports["serve"] == 8000
    assert ports["dicom"] == 11112
    # The DICOM Service reaches that port on this head (and only on a head).
    service = resource(name, "Service")
    assert service["spec"]["ports"][0]["port"] == 11112
    assert service["spec"]["ports"][0]["targetPort"] == "dicom"
    selector = service["spec"]["selector"]
    assert selector.items() <= head["metadata"]["labels"].items()
    for group in spec["workerGroupSpecs"]:
        assert not selector.items() <= group["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayservice.yaml"])
def test_gpu_group_declares_its_gpus_to_kubernetes_and_ray(name: str) -> None:
    groups = {g["groupName"]: g for g in cluster_specs()[name]["workerGroupSpecs"]}
    gpu = groups["gpu"]
    limits = ray_container(gpu["template"])["resources"]["limits"]
    assert gpu["rayStartParams"]["num-gpus"] == limits["nvidia.com/gpu"]
    # clara-ray runs GPU work on CPU when the cluster has no GPU at all: never scale to zero.
    assert gpu["minReplicas"] >= 1
    assert "nvidia.com/gpu" not in ray_container(groups["cpu"]["template"])["resources"]["limits"]


# -- the sample job --------------------------------------------------------------------------


def test_rayjob_runs_an_existing_pipeline_on_its_own_cluster() -> None:
    job = resource("rayjob.yaml", "RayJob")["spec"]
    argv = shlex.split(job["entrypoint"])
    assert argv[:3] == ["python", "-m", "clara_ray.run"]
    pipeline = argv[3]
    assert (ROOT / pipeline).is_file(), f"entrypoint names {pipeline}, not a file of the repo"
    assert pipeline.startswith("pipelines/")
    # The entrypoint's relative path resolves against the head container's working directory.
    head = ray_container(job["rayClusterSpec"]["headGroupSpec"]["template"])
    assert head["workingDir"] == "/home/ray/clara-ray"
    assert job["shutdownAfterJobFinishes"] is True
    assert job["ttlSecondsAfterFinished"] > 0
    assert "clusterSelector" not in job
