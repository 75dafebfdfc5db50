"""The KubeRay manifests in cluster/: valid custom resources, the same Serve apps and settings.

No Kubernetes cluster: the base manifests (cluster/base/) and every overlay (cluster/overlays/)
rendered with `kubectl kustomize` are checked against the KubeRay CRDs by the shared
`validate-kuberay` tool, serveConfigV2 against Ray Serve's schema (with no key it does not
define), the settings ConfigMap with clara-ray's own settings loader; the overlays must change
what they say they change, and the clusters' scheduling settings must agree with their pods.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
import shutil
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from clara_ray.config.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
BASE = CLUSTER / "base"
OVERLAYS_DIR = CLUSTER / "overlays"
KINDS = {"raycluster.yaml": "RayCluster", "rayservice.yaml": "RayService", "rayjob.yaml": "RayJob"}
MANIFESTS = tuple(KINDS)
FLAVOURS = {name: name.removesuffix(".yaml") for name in MANIFESTS}  # manifest -> base/<folder>
SETTINGS_MANIFEST = BASE / "settings" / "clara-settings.yaml"
PRIORITY_MANIFEST = BASE / "settings" / "priorityclasses.yaml"
# The repository root's parent holds shared/ (see PEERS.md: "KubeRay CRDs, offline").
VALIDATOR = Path(__file__).resolve().parents[3] / "shared" / "tools" / "validate-kuberay"
SETTINGS_PATH = "/etc/clara-ray/settings.yaml"
SETTINGS_CONFIGMAP = "clara-ray-settings"
HEAD_RESOURCE = "clara_head"
GPU_IMAGE = "ghcr.io/example/clara-ray-gpu:0.1.0"
CPU_IMAGE = "ghcr.io/example/clara-ray:0.1.0"

# What each overlay says it changes (its kustomization.yaml's header), checked against the base.
# gpu: (minReplicas, replicas, maxReplicas, GPUs per pod) of the gpu group, None: no gpu group.
BASE_VALUES: dict[str, Any] = {
    "images": {CPU_IMAGE, GPU_IMAGE},
    "storage_uri": "s3://clara-imaging/clara-ray",
    "jobs_storage_uri": "s3://clara-imaging/clara-ray-jobs",
    "gpu": (1, 2, 4, "1"),
    "dicom_service_type": "ClusterIP",
    "gcs_ft": True,
}
OVERLAYS: dict[str, dict[str, Any]] = {
    "laptop-kind": {
        "images": {"clara-ray:dev"},
        "storage_uri": "/srv/clara-ray-storage/clara-ray",
        "jobs_storage_uri": "/srv/clara-ray-storage/clara-ray-jobs",
        "gpu": None,
        "dicom_service_type": "NodePort",
        "gcs_ft": False,
        "flavour": "raycluster.yaml",
    },
    "gpu-cloud": {
        "images": {
            "registry.example.org/imaging/clara-ray:0.1.0",
            "registry.example.org/imaging/clara-ray-gpu:0.1.0",
        },
        "storage_uri": "s3://my-imaging-bucket/clara-ray?region=eu-west-1",
        "jobs_storage_uri": "s3://my-imaging-bucket/clara-ray-jobs?region=eu-west-1",
        "gpu": (1, 2, 6, "2"),
        "dicom_service_type": "LoadBalancer",
        "gcs_ft": True,
        "flavour": "rayservice.yaml",
    },
}
OVERLAY_NAMES = sorted(p.parent.name for p in OVERLAYS_DIR.glob("*/kustomization.yaml"))
# Each overlay as it is, then with each flavour in place of the one it lists (its patches must
# cover all three), and the base itself (settings + one flavour, no overlay).
RENDERINGS = [(overlay, None) for overlay in OVERLAY_NAMES] + [
    (overlay, flavour) for overlay in ["base", *OVERLAY_NAMES] for flavour in MANIFESTS
]
RENDERING_IDS = [f"{o}-{(f or 'as-is').removesuffix('.yaml')}" for o, f in RENDERINGS]


# -- reading manifests -----------------------------------------------------------------------


def load_documents(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def documents(name: str) -> list[dict[str, Any]]:
    """The documents of a base manifest (raycluster.yaml, ..., clara-settings.yaml)."""
    if name == "clara-settings.yaml":
        return load_documents(SETTINGS_MANIFEST)
    return load_documents(BASE / FLAVOURS[name] / name)


def only(docs: list[dict[str, Any]], kind: str, where: str) -> dict[str, Any]:
    found = [d for d in docs if d.get("kind") == kind]
    assert len(found) == 1, f"{where}: expected one {kind}, found {len(found)}"
    return found[0]


def resource(name: str, kind: str) -> dict[str, Any]:
    return only(documents(name), kind, name)


def cluster_spec_of(doc: dict[str, Any]) -> dict[str, Any]:
    """The RayCluster spec of a custom resource (a RayService's and a RayJob's embedded one)."""
    spec: dict[str, Any] = doc["spec"]
    key = {"RayService": "rayClusterConfig", "RayJob": "rayClusterSpec"}.get(doc["kind"])
    embedded: dict[str, Any] = spec[key] if key else spec
    return embedded


def cluster_specs() -> dict[str, dict[str, Any]]:
    return {name: cluster_spec_of(resource(name, kind)) for name, kind in KINDS.items()}


def pod_templates(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    groups = {"head": spec["headGroupSpec"]["template"]}
    groups.update({g["groupName"]: g["template"] for g in spec.get("workerGroupSpecs", [])})
    return groups


def worker_groups(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {g["groupName"]: g for g in spec.get("workerGroupSpecs", [])}


def ray_container(template: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = template["spec"]["containers"][0]  # KubeRay's Ray container
    return container


def configmaps_of(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: d.get("data", {}) for d in docs if d.get("kind") == "ConfigMap"}


def base_configmaps() -> dict[str, dict[str, str]]:
    return configmaps_of(documents("clara-settings.yaml"))


def env_of(container: dict[str, Any], configmaps: dict[str, dict[str, str]]) -> dict[str, str]:
    """The container's env as the kubelet sets it: values, and ConfigMap keys resolved.

    A ConfigMap key that is not there fails (the pod would not start); Secrets are left out.
    """
    env: dict[str, str] = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
            continue
        ref = e.get("valueFrom", {}).get("configMapKeyRef")
        if ref is None:
            continue
        data = configmaps.get(ref["name"])
        assert data is not None, f"env {e['name']}: no ConfigMap {ref['name']}"
        if ref["key"] not in data:
            assert ref.get("optional"), (
                f"env {e['name']}: ConfigMap {ref['name']} has no {ref['key']}"
            )
            continue
        env[e["name"]] = data[ref["key"]]
    return env


def settings_file(tmp_path: Path, configmaps: dict[str, dict[str, str]] | None = None) -> Path:
    data = (configmaps or base_configmaps())[SETTINGS_CONFIGMAP]
    path = tmp_path / "settings.yaml"
    path.write_text(data["settings.yaml"], encoding="utf-8")
    return path


def pod_settings(
    template: dict[str, Any], configmaps: dict[str, dict[str, str]], tmp_path: Path
) -> Settings:
    """The settings a pod's processes load: the mounted file, then the pod's CLARA_RAY_* env."""
    env = env_of(ray_container(template), configmaps)
    overrides = {k: v for k, v in env.items() if k.startswith("CLARA_RAY_")}
    return load_settings(settings_file(tmp_path, configmaps), env=overrides)


def serve_config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(
        resource("rayservice.yaml", "RayService")["spec"]["serveConfigV2"]
    )
    return config


# -- rendering overlays ----------------------------------------------------------------------


def kustomize(directory: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is missing: the overlays are rendered with `kubectl kustomize`")
    proc = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"kubectl kustomize {directory} failed:\n{proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@functools.cache
def copied_tree() -> Path:
    """A copy of cluster/ to render overlays with another flavour listed (kustomize reads files)."""
    import atexit
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="clara-ray-kustomize-"))
    atexit.register(shutil.rmtree, tmp, True)
    shutil.copytree(CLUSTER, tmp / "cluster")
    return tmp / "cluster"


@functools.cache
def render(overlay: str, flavour: str | None) -> tuple[dict[str, Any], ...]:
    if overlay == "base":
        assert flavour is not None
        docs = kustomize(BASE / "settings") + kustomize(BASE / FLAVOURS[flavour])
        return tuple(docs)
    if flavour is None:
        return tuple(kustomize(OVERLAYS_DIR / overlay))
    # The overlay with `flavour` as its one platform/job resource: the others are left out.
    tree = copied_tree()
    directory = tree / "overlays" / f"{overlay}--{FLAVOURS[flavour]}"
    if not directory.exists():
        shutil.copytree(tree / "overlays" / overlay, directory)
        path = directory / "kustomization.yaml"
        kustomization = yaml.safe_load(path.read_text(encoding="utf-8"))
        flavour_dirs = {f"../../base/{folder}" for folder in FLAVOURS.values()}
        resources = [r for r in kustomization["resources"] if r not in flavour_dirs]
        assert len(resources) == len(kustomization["resources"]) - 1, (
            f"{overlay}: its kustomization should list exactly one of {sorted(flavour_dirs)}"
        )
        kustomization["resources"] = [*resources, f"../../base/{FLAVOURS[flavour]}"]
        path.write_text(yaml.safe_dump(kustomization, sort_keys=False), encoding="utf-8")
    return tuple(kustomize(directory))


def rendered_resources(overlay: str, flavour: str | None) -> list[dict[str, Any]]:
    return [d for d in render(overlay, flavour) if d["kind"] in KINDS.values()]


def flavour_of(overlay: str, flavour: str | None) -> str:
    return flavour or OVERLAYS[overlay]["flavour"]


def expected_values(overlay: str) -> dict[str, Any]:
    return BASE_VALUES if overlay == "base" else OVERLAYS[overlay]


# -- the custom resources against the KubeRay CRDs ------------------------------------------


def run_validator(paths: list[str]) -> str:
    if not VALIDATOR.is_file():
        pytest.fail(
            f"the KubeRay validator is missing: expected {VALIDATOR} "
            "(the shared/ folder beside the repository, see PEERS.md)"
        )
    proc = subprocess.run(
        [sys.executable, str(VALIDATOR), "--strict", *paths],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"validate-kuberay --strict failed:\n{output}"
    return output


def test_custom_resources_pass_validate_kuberay_strict() -> None:
    paths = {name: BASE / FLAVOURS[name] / name for name in MANIFESTS}
    output = run_validator([str(p) for p in paths.values()])
    # Each file's custom resource was checked, not skipped as an unknown kind.
    for name, kind in KINDS.items():
        assert f"OK   {paths[name]} {kind}/" in output, output
    assert "3 valid, 0 invalid" in output, output


def test_every_overlay_is_described_here() -> None:
    """A new overlay must say here what it changes, or the checks below would not cover it."""
    assert sorted(OVERLAYS) == OVERLAY_NAMES, (OVERLAY_NAMES, sorted(OVERLAYS))


@pytest.mark.parametrize(("overlay", "flavour"), RENDERINGS, ids=RENDERING_IDS)
def test_kustomize_renders_the_settings_priorities_and_one_custom_resource(
    overlay: str, flavour: str | None
) -> None:
    docs = render(overlay, flavour)
    kinds = [d["kind"] for d in docs]
    assert kinds.count("ConfigMap") == 1, kinds
    assert kinds.count("PriorityClass") == 3, kinds
    custom = [d["kind"] for d in rendered_resources(overlay, flavour)]
    assert custom == [KINDS[flavour_of(overlay, flavour)]], custom
    # Values files of an overlay (local-config) are not applied.
    assert all(d["apiVersion"] in ("v1", "ray.io/v1", "scheduling.k8s.io/v1") for d in docs), kinds
    if overlay != "base":
        namespaced = [d for d in docs if d["kind"] != "PriorityClass"]
        assert {d["metadata"].get("namespace") for d in namespaced} == {"clara-ray"}
        assert all("namespace" not in d["metadata"] for d in docs if d["kind"] == "PriorityClass")


def test_rendered_custom_resources_pass_validate_kuberay_strict(tmp_path: Path) -> None:
    paths = []
    for (overlay, flavour), rid in zip(RENDERINGS, RENDERING_IDS, strict=True):
        path = tmp_path / f"{rid}.yaml"
        path.write_text(yaml.safe_dump_all(render(overlay, flavour)), encoding="utf-8")
        paths.append(path)
    output = run_validator([str(p) for p in paths])
    for path, (overlay, flavour) in zip(paths, RENDERINGS, strict=True):
        kind = KINDS[flavour_of(overlay, flavour)]
        assert f"OK   {path} {kind}/" in output, output
    assert f"{len(paths)} valid, 0 invalid" in output, output


# -- the overlays change what they claim -----------------------------------------------------


def images_of(doc: dict[str, Any]) -> set[str]:
    spec = cluster_spec_of(doc)
    images = set()
    for template in pod_templates(spec).values():
        pod = template["spec"]
        for container in pod.get("initContainers", []) + pod["containers"]:
            images.add(container["image"])
    return images


def gpu_group_of(doc: dict[str, Any]) -> tuple[int, int, int, str] | None:
    group = worker_groups(cluster_spec_of(doc)).get("gpu")
    if group is None:
        return None
    resources = ray_container(group["template"])["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"]
    gpus: str = resources["limits"]["nvidia.com/gpu"]
    assert group["rayStartParams"]["num-gpus"] == gpus, "Ray and Kubernetes disagree on GPUs"
    return group["minReplicas"], group["replicas"], group["maxReplicas"], gpus


def claimed(overlay: str, flavour: str | None) -> dict[str, Any]:
    """The values of one rendering, as OVERLAYS states them."""
    docs = list(render(overlay, flavour))
    name = flavour_of(overlay, flavour)
    doc = only(docs, KINDS[name], f"{overlay}/{name}")
    configmaps = configmaps_of(docs)
    head = ray_container(cluster_spec_of(doc)["headGroupSpec"]["template"])
    values: dict[str, Any] = {"images": images_of(doc)}
    storage_key = "jobs_storage_uri" if name == "rayjob.yaml" else "storage_uri"
    values[storage_key] = env_of(head, configmaps)["CLARA_RAY_STORAGE_URI"]
    if name != "rayjob.yaml":
        values["gpu"] = gpu_group_of(doc)
        values["dicom_service_type"] = only(docs, "Service", overlay)["spec"]["type"]
        values["gcs_ft"] = "gcsFaultToleranceOptions" in cluster_spec_of(doc)
    return values


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
@pytest.mark.parametrize("flavour", MANIFESTS)
def test_overlay_changes_what_it_claims(overlay: str, flavour: str) -> None:
    base = claimed("base", flavour)
    got = claimed(overlay, flavour)
    expected = OVERLAYS[overlay]
    assert set(got) <= set(expected), sorted(set(got) - set(expected))
    for key, value in got.items():
        if key == "images":
            # A RayJob has no GPU group: it runs the CPU image only.
            assert value and value <= expected[key], (overlay, flavour, value)
            assert not value & base[key], f"{overlay}: still the base's images {value}"
        else:
            assert value == expected[key], (overlay, flavour, key, value)
            # What an overlay claims to change differs from the base (GCS FT may stay as it is).
            if key != "gcs_ft":
                assert value != base[key], (overlay, flavour, key, value)


@pytest.mark.parametrize("flavour", MANIFESTS)
def test_base_renders_the_base_values(flavour: str) -> None:
    got = claimed("base", flavour)
    for key, value in got.items():
        if key == "images":
            assert value <= BASE_VALUES["images"] and value, value
        else:
            assert value == BASE_VALUES[key], (flavour, key, value)


@pytest.mark.parametrize(("overlay", "flavour"), RENDERINGS, ids=RENDERING_IDS)
def test_every_rendered_pod_loads_the_rendered_settings(
    overlay: str, flavour: str | None, tmp_path: Path
) -> None:
    """The storage URI in the settings reaches every pod, which loads its settings with it."""
    docs = list(render(overlay, flavour))
    configmaps = configmaps_of(docs)
    for doc in rendered_resources(overlay, flavour):
        key = "jobs.storage_uri" if doc["kind"] == "RayJob" else "storage_uri"
        want = configmaps[SETTINGS_CONFIGMAP][key]
        for group, template in pod_templates(cluster_spec_of(doc)).items():
            settings = pod_settings(template, configmaps, tmp_path)
            assert settings.storage_uri == want, (overlay, doc["kind"], group)
            # A storage folder must be a volume of that pod (the laptop's shared volume).
            if not re.match(r"^[a-z0-9]+://", want):
                mounts = [m["mountPath"] for m in ray_container(template)["volumeMounts"]]
                assert any(want.startswith(m.rstrip("/") + "/") for m in mounts), (group, mounts)


# -- the head: num-cpus 0, clara_head, priority, pools ---------------------------------------


def all_cluster_specs() -> list[tuple[str, dict[str, Any], dict[str, dict[str, str]]]]:
    """(where, cluster spec, ConfigMaps) of the base files and of every rendering."""
    specs = [(name, spec, base_configmaps()) for name, spec in cluster_specs().items()]
    for (overlay, flavour), rid in zip(RENDERINGS, RENDERING_IDS, strict=True):
        configmaps = configmaps_of(list(render(overlay, flavour)))
        for doc in rendered_resources(overlay, flavour):
            specs.append((rid, cluster_spec_of(doc), configmaps))
    return specs


def declared_resources(params: dict[str, str]) -> dict[str, Any]:
    """Custom resources of `ray start --resources=...` as KubeRay passes rayStartParams to bash."""
    if "resources" not in params:
        return {}
    argv = shlex.split(f"ray start --resources={params['resources']}")
    decoded: dict[str, Any] = json.loads(argv[-1].removeprefix("--resources="))
    return decoded


def test_declared_resources_reads_kuberays_quoting() -> None:
    assert declared_resources({"resources": '"{\\"clara_head\\": 1}"'}) == {"clara_head": 1}
    with pytest.raises(json.JSONDecodeError):
        declared_resources({"resources": '{"clara_head": 1}'})  # unquoted: bash eats the quotes


def test_head_runs_no_cpu_work_and_declares_the_head_resource(tmp_path: Path) -> None:
    specs = all_cluster_specs()
    assert len(specs) == 3 + len(RENDERINGS)
    for where, spec, configmaps in specs:
        params = spec["headGroupSpec"]["rayStartParams"]
        assert params["num-cpus"] == "0", where
        assert declared_resources(params) == {HEAD_RESOURCE: 1}, where
        settings = pod_settings(spec["headGroupSpec"]["template"], configmaps, tmp_path)
        assert settings.scheduling.head_resource == HEAD_RESOURCE, where
        # Only the head declares it: the platform's actors must not land on a worker.
        for name, group in worker_groups(spec).items():
            assert HEAD_RESOURCE not in declared_resources(group["rayStartParams"]), (where, name)


def test_settings_configmap_names_the_head_resource_and_capacity_keys() -> None:
    data = base_configmaps()[SETTINGS_CONFIGMAP]
    settings = yaml.safe_load(data["settings.yaml"])
    assert settings["scheduling"]["head_resource"] == HEAD_RESOURCE
    # capacity and storage_uri are keys of their own (overlays change them), not in the file.
    assert "capacity" not in settings["scheduling"]
    assert "storage_uri" not in settings
    for key in ("cpu", "gpu", "memory"):
        assert f"scheduling.capacity.{key}" in data, key


_QUANTITY = re.compile(r"^([0-9.]+)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
_FACTORS = {
    None: 1,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def quantity(value: str | int | float) -> float:
    """A Kubernetes resource quantity ("500m", "8", "32Gi") as a number."""
    match = _QUANTITY.match(str(value))
    assert match, f"not a quantity: {value!r}"
    return float(match.group(1)) * _FACTORS[match.group(2)]


def test_quantity() -> None:
    assert quantity("500m") == 0.5
    assert quantity(8) == 8
    assert quantity("32Gi") == 32 * 2**30
    with pytest.raises(AssertionError):
        quantity("lots")


def group_limits(group: dict[str, Any]) -> dict[str, float]:
    limits = ray_container(group["template"])["resources"]["limits"]
    return {
        "cpu": quantity(limits["cpu"]),
        "gpu": quantity(limits.get("nvidia.com/gpu", 0)),
        "memory": quantity(limits["memory"]),
    }


def test_capacity_is_what_the_autoscaling_cluster_can_grow_to(tmp_path: Path) -> None:
    """An autoscaling cluster must not refuse jobs that fit its maximum, nor admit beyond it."""
    autoscaling = 0
    for where, spec, configmaps in all_cluster_specs():
        groups = worker_groups(spec)
        for name, group in groups.items():
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], (where, name)
        capacity = pod_settings(
            spec["headGroupSpec"]["template"], configmaps, tmp_path
        ).scheduling.capacity
        if not spec.get("enableInTreeAutoscaling"):
            # A cluster of a fixed size: what its nodes have is the most it holds.
            for name, group in groups.items():
                assert group["minReplicas"] == group["maxReplicas"], (where, name)
            assert (capacity.cpu, capacity.gpu, capacity.memory) == (None, None, None), where
            continue
        autoscaling += 1
        assert spec["autoscalerOptions"]["idleTimeoutSeconds"] > 0, where
        most = {"cpu": 0.0, "gpu": 0.0, "memory": 0.0}
        for group in groups.values():
            for key, value in group_limits(group).items():
                most[key] += group["maxReplicas"] * value
        assert capacity.cpu == most["cpu"], (where, capacity, most)
        assert (capacity.gpu or 0) == most["gpu"], (where, capacity, most)
        assert capacity.memory_bytes == most["memory"], (where, capacity, most)
    assert autoscaling >= 2  # the platform's RayCluster and RayService at least


def test_platform_clusters_autoscale_and_the_sample_job_does_not() -> None:
    specs = cluster_specs()
    assert specs["raycluster.yaml"]["enableInTreeAutoscaling"] is True
    assert specs["rayservice.yaml"]["enableInTreeAutoscaling"] is True
    assert not specs["rayjob.yaml"].get("enableInTreeAutoscaling")


def test_priority_classes_rank_the_head_above_workers_above_batch() -> None:
    classes = {d["metadata"]["name"]: d for d in load_documents(PRIORITY_MANIFEST)}
    platform, worker, batch = (
        classes["clara-ray-platform"],
        classes["clara-ray-worker"],
        classes["clara-ray-batch"],
    )
    assert platform["value"] > worker["value"] > batch["value"] > 0
    # Below Kubernetes' own system classes: the platform never displaces cluster infrastructure.
    assert platform["value"] < 1_000_000_000
    assert batch["preemptionPolicy"] == "Never"
    assert not any(c.get("globalDefault") for c in classes.values())


def test_every_pod_names_its_priority_class() -> None:
    defined = {d["metadata"]["name"] for d in load_documents(PRIORITY_MANIFEST)}
    for where, spec, _ in all_cluster_specs():
        job = "rayjob" in where
        for group, template in pod_templates(spec).items():
            name = template["spec"].get("priorityClassName")
            assert name in defined, (where, group, name)
            if job:
                assert name == "clara-ray-batch", (where, group)
            else:
                want = "clara-ray-platform" if group == "head" else "clara-ray-worker"
                assert name == want, (where, group, name)


def test_gpu_group_runs_on_the_gpu_pool_and_cpu_pods_stay_off_it() -> None:
    seen = 0
    for where, spec, _ in all_cluster_specs():
        for name, template in pod_templates(spec).items():
            pod = template["spec"]
            limits = ray_container(template)["resources"]["limits"]
            tolerates = any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", []))
            if name == "gpu":
                seen += 1
                assert quantity(limits["nvidia.com/gpu"]) >= 1, where
                assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}, where
                assert tolerates, where
            else:
                assert "nvidia.com/gpu" not in limits, (where, name)
                assert not tolerates, (where, name)
    assert seen >= 2


# -- GCS fault tolerance ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayservice.yaml"])
def test_platform_keeps_the_gcs_in_an_external_redis(name: str) -> None:
    spec = cluster_specs()[name]
    ft = spec["gcsFaultToleranceOptions"]
    assert ft["redisAddress"] == "clara-ray-redis:6379"
    assert ft["redisPassword"] == {
        "valueFrom": {"secretKeyRef": {"name": "clara-ray-redis", "key": "password"}}
    }
    # KubeRay refuses the old way of turning it on beside the new one.
    annotations = resource(name, KINDS[name])["metadata"].get("annotations", {})
    assert "ray.io/ft-enabled" not in annotations
    assert "redis-password" not in spec["headGroupSpec"]["rayStartParams"]
    for template in pod_templates(spec).values():
        names = {e["name"] for e in ray_container(template).get("env", [])}
        assert not names & {"RAY_REDIS_ADDRESS", "REDIS_PASSWORD"}  # KubeRay sets them


# -- serveConfigV2 ---------------------------------------------------------------------------


def _models_in(annotation: Any) -> list[Any]:
    """The pydantic models (possibly inside list[...] / dict[...]) a field's annotation allows."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    if origin in (list, tuple, set, frozenset, dict):
        return [annotation]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


def unknown_keys(value: Any, annotation: Any, path: str = "") -> list[str]:
    """Keys of `value` that the schema `annotation` does not define (pydantic ignores them)."""
    candidates = _models_in(annotation)
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, set, frozenset):
        args = typing.get_args(annotation)
        if isinstance(value, list) and args:
            return [
                k for i, v in enumerate(value) for k in unknown_keys(v, args[0], f"{path}[{i}]")
            ]
        return []
    if origin is dict:
        args = typing.get_args(annotation)
        if isinstance(value, dict) and len(args) == 2:
            return [
                k for key, v in value.items() for k in unknown_keys(v, args[1], f"{path}.{key}")
            ]
        return []
    if not candidates:
        return []  # a free-form value (Any, dict, str, an enum...): nothing to check
    if candidates != [annotation]:
        # Optional[...] or a union: the reading that leaves the fewest unknown keys.
        return min((unknown_keys(value, c, path) for c in candidates), key=len)
    model: type[BaseModel] = annotation
    if not isinstance(value, dict):
        return []
    fields = {}
    for field_name, field in model.model_fields.items():
        fields[field_name] = field
        if field.alias:
            fields[field.alias] = field
    found = []
    for key, item in value.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in fields:
            found.append(where)
        else:
            found.extend(unknown_keys(item, fields[key].annotation, where))
    return found


def serve_configs() -> dict[str, dict[str, Any]]:
    config_yaml = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text(encoding="utf-8"))
    return {"rayservice.yaml serveConfigV2": serve_config(), "serve/config.yaml": config_yaml}


def test_unknown_keys_finds_keys_the_schema_does_not_define() -> None:
    from ray.serve.schema import ServeDeploySchema

    config = serve_config()
    config["proxy_locaton"] = "EveryNode"
    config["http_options"]["hots"] = "0.0.0.0"
    config["applications"][1]["routeprefix"] = "/v3"
    config["applications"][1]["deployments"] = [
        {"name": "x", "num_replica": 2, "ray_actor_options": {"num_gpu": 1}}
    ]
    # Ray's schema takes all of this without a word...
    ServeDeploySchema.model_validate(config)
    # ...the walk does not.
    assert sorted(unknown_keys(config, ServeDeploySchema)) == [
        "applications[1].deployments[0].num_replica",
        "applications[1].deployments[0].ray_actor_options.num_gpu",
        "applications[1].routeprefix",
        "http_options.hots",
        "proxy_locaton",
    ]


@pytest.mark.parametrize("which", ["rayservice.yaml serveConfigV2", "serve/config.yaml"])
def test_serve_config_is_a_valid_serve_deploy_config_with_no_unknown_key(which: str) -> None:
    from ray.serve.schema import ServeDeploySchema

    config = serve_configs()[which]
    schema = ServeDeploySchema.model_validate(config)
    assert unknown_keys(config, ServeDeploySchema) == [], which
    apps = {app.name: app for app in schema.applications}
    assert set(apps) == {"clara-api", "clara-inference", "clara-inference-liver-seg"}
    assert apps["clara-api"].route_prefix == "/"
    assert apps["clara-api"].import_path == "serve.api:build_app"
    assert apps["clara-inference"].route_prefix == "/v2"
    assert apps["clara-inference"].import_path == "serve.inference:build_app"
    model_app = apps["clara-inference-liver-seg"]
    assert model_app.route_prefix == "/v2/models/liver-seg"
    assert model_app.import_path == "serve.inference:build_model_app"
    assert model_app.args["model"] == "liver-seg"
    assert schema.http_options.port == 8000


def test_serve_config_v2_listens_on_every_interface() -> None:
    from ray.serve.schema import ServeDeploySchema

    assert ServeDeploySchema.model_validate(serve_config()).http_options.host == "0.0.0.0"


def test_serve_config_v2_applications_are_serve_config_yaml_s() -> None:
    expected = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text(encoding="utf-8"))
    assert serve_config()["applications"] == expected["applications"]


# -- settings --------------------------------------------------------------------------------


def test_settings_configmap_loads_with_cluster_values(tmp_path: Path) -> None:
    head = resource("raycluster.yaml", "RayCluster")["spec"]["headGroupSpec"]["template"]
    settings = pod_settings(head, base_configmaps(), tmp_path)
    assert settings.ray.address == "auto"
    assert settings.storage_uri is not None and settings.storage_uri.startswith("s3://")
    assert settings.dicom.host == "0.0.0.0"
    assert settings.dicom.reject_unknown_sources is True
    assert settings.serve.host == "0.0.0.0"
    assert settings.serve.port == 8000
    assert settings.core.gpu_fallback is False


@pytest.mark.parametrize("name", MANIFESTS)
def test_every_ray_pod_reads_the_settings_configmap(name: str, tmp_path: Path) -> None:
    configmaps = base_configmaps()
    for group, template in pod_templates(cluster_specs()[name]).items():
        where = f"{name}, group {group}"
        container = ray_container(template)
        env = env_of(container, configmaps)
        assert env.get("CLARA_RAY_CONFIG") == SETTINGS_PATH, where
        volumes = {v["name"]: v for v in template["spec"].get("volumes", [])}
        mounts = [
            m
            for m in container.get("volumeMounts", [])
            if volumes.get(m["name"], {}).get("configMap", {}).get("name") == SETTINGS_CONFIGMAP
        ]
        assert [m["mountPath"] for m in mounts] == [str(Path(SETTINGS_PATH).parent)], where
        # The pod's CLARA_RAY_* overrides are settings too: they must load over the file.
        settings = pod_settings(template, configmaps, tmp_path)
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
    # The overlays find it by this label.
    assert service["metadata"]["labels"]["app.kubernetes.io/component"] == "dicom"
    selector = service["spec"]["selector"]
    assert selector.items() <= head["metadata"]["labels"].items()
    for group in spec["workerGroupSpecs"]:
        assert not selector.items() <= group["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayservice.yaml"])
def test_gpu_group_declares_its_gpus_to_kubernetes_and_ray(name: str) -> None:
    groups = worker_groups(cluster_specs()[name])
    gpu = groups["gpu"]
    limits = ray_container(gpu["template"])["resources"]["limits"]
    assert gpu["rayStartParams"]["num-gpus"] == limits["nvidia.com/gpu"]
    # clara-ray runs GPU work on CPU when the cluster has no GPU at all: never scale to zero.
    assert gpu["minReplicas"] >= 1
    assert "nvidia.com/gpu" not in ray_container(groups["cpu"]["template"])["resources"]["limits"]


@pytest.mark.parametrize(("overlay", "flavour"), RENDERINGS, ids=RENDERING_IDS)
def test_rendered_gpu_groups_never_scale_to_zero(overlay: str, flavour: str | None) -> None:
    for doc in rendered_resources(overlay, flavour):
        gpu = gpu_group_of(doc)
        if gpu is not None:
            assert gpu[0] >= 1, (overlay, flavour, gpu)


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


# -- the docs --------------------------------------------------------------------------------


@pytest.mark.parametrize("doc", ["cluster/README.md", "README.md"])
def test_docs_name_cluster_paths_that_exist(doc: str) -> None:
    text = (ROOT / doc).read_text(encoding="utf-8")
    paths = set(re.findall(r"cluster/[A-Za-z0-9_./-]*[A-Za-z0-9_/-]", text))
    missing = sorted(p for p in paths if "*" not in p and not (ROOT / p).exists())
    assert not missing, f"{doc} names paths that do not exist: {missing}"


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayservice.yaml"])
def test_serving_clusters_run_serve_behind_haproxy(name: str) -> None:
    """Every pod of the clusters that serve HTTP gets Ray's throughput settings for Serve
    (HAProxy, direct ingress): Ray reads them when its processes start."""
    spec = cluster_spec_of(resource(name, KINDS[name]))
    for group, template in pod_templates(spec).items():
        env = env_of(ray_container(template), base_configmaps())
        assert env.get("RAY_SERVE_THROUGHPUT_OPTIMIZED") == "1", (name, group)
        assert env.get("RAY_SERVE_ENABLE_HA_PROXY") == "1", (name, group)
