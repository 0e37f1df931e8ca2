"""deploy/ validated offline: every Kubernetes object against the Kubernetes schemas that
kubernetes-validate ships, the KEDA ScaledObjects against KEDA's CRD schema (vendored beside this
file), and what they name against the code: commands, queues, settings, metric names, ports."""

from __future__ import annotations

import base64
import copy
import importlib
import json
import re
from dataclasses import fields
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from dermscreen.config import Config
from dermscreen.worker import queues
from tests.deploy.promql import exported_names, matchers, metric_names, unknown_label_values
from tests.test_compose import option, parse_dermscreen

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = "1.37"  # the newest schemas kubernetes-validate ships
KEDA_SCHEMA = json.loads((Path(__file__).with_name("keda_scaledobject_v1alpha1.json")).read_text())
KUSTOMIZATION = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
BROKER_URL = "redis://:$(REDIS_PASSWORD)@$(REDIS_ADDRESS)/0"


def generated_secret() -> dict:
    """The Secret kustomize's secretGenerator makes, from secret.env.example."""
    generator, = KUSTOMIZATION["secretGenerator"]
    assert generator["envs"] == ["secret.env"]
    pairs = [line.split("=", 1) for line in (DEPLOY / "secret.env.example").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": generator["name"], "namespace": KUSTOMIZATION["namespace"]},
            "data": {key: base64.b64encode(value.encode()).decode() for key, value in pairs}}


def load() -> list[dict]:
    resources = []
    for name in KUSTOMIZATION["resources"]:
        resources += [doc for doc in yaml.safe_load_all((DEPLOY / name).read_text()) if doc]
    return resources + [generated_secret()]


RESOURCES = load()
BY_KIND: dict[str, dict[str, dict]] = {}
for _resource in RESOURCES:
    BY_KIND.setdefault(_resource["kind"], {})[_resource["metadata"]["name"]] = _resource
CORE = [resource for resource in RESOURCES if resource["kind"] != "ScaledObject"]
SCALED = list(BY_KIND["ScaledObject"].values())
WORKLOADS = {**BY_KIND["Deployment"], **BY_KIND["Job"]}
CONFIG = BY_KIND["ConfigMap"]["dermscreen-config"]["data"]
SECRET = {key: base64.b64decode(value).decode()
          for key, value in BY_KIND["Secret"]["dermscreen-secrets"]["data"].items()}


def ident(resource: dict) -> str:
    return f"{resource['kind']}/{resource['metadata']['name']}"


def containers(workload: dict) -> list[dict]:
    spec = workload["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def container_env(container: dict) -> dict[str, str]:
    """The container's environment as Kubernetes builds it: envFrom first, then env."""
    env = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(BY_KIND["ConfigMap"][source["configMapRef"]["name"]]["data"])
        else:
            env.update(SECRET if source["secretRef"]["name"] == "dermscreen-secrets" else {})
    env.update({item["name"]: item["value"] for item in container.get("env", [])})
    return env


def test_kustomization_lists_every_manifest():
    listed = set(KUSTOMIZATION["resources"])
    on_disk = {path.name for path in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    assert KUSTOMIZATION["namespace"] == BY_KIND["Namespace"][KUSTOMIZATION["namespace"]][
        "metadata"]["name"]
    assert {image["name"] for image in KUSTOMIZATION["images"]} == {
        container["image"] for workload in WORKLOADS.values() for container in containers(workload)}
    assert "/deploy/secret.env" in (ROOT / ".gitignore").read_text().splitlines()


@pytest.mark.parametrize("resource", CORE, ids=ident)
def test_manifest_is_valid_kubernetes(resource):
    kubernetes_validate.validate(resource, KUBERNETES, strict=True)


@pytest.mark.parametrize("break_it", [
    lambda web: web["spec"].update(replica=2),  # a misspelt field
    lambda web: web["spec"]["template"]["spec"]["containers"][0]["ports"][0].update(
        containerPort="8000"),  # a string for an integer
    lambda web: web["spec"].pop("selector"),  # a required field
], ids=["unknown-field", "wrong-type", "missing-field"])
def test_kubernetes_schemas_refuse_a_broken_manifest(break_it):
    web = copy.deepcopy(BY_KIND["Deployment"]["web"])
    break_it(web)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(web, KUBERNETES, strict=True)


@pytest.mark.parametrize("scaled", SCALED, ids=ident)
def test_scaled_object_matches_keda_schema(scaled):
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    jsonschema.Draft202012Validator(KEDA_SCHEMA).validate(scaled)


@pytest.mark.parametrize("break_it", [
    lambda spec: spec.update(minReplicas=0),  # a misspelt field
    lambda spec: spec.update(minReplicaCount="0"),  # a string for an integer
    lambda spec: spec["triggers"][0]["metadata"].update(databaseIndex=0),  # metadata are strings
    lambda spec: spec.pop("scaleTargetRef"),  # a required field
], ids=["unknown-field", "wrong-type", "metadata-not-string", "missing-field"])
def test_keda_schema_refuses_a_broken_scaled_object(break_it):
    scaled = copy.deepcopy(BY_KIND["ScaledObject"]["worker-gpu"])
    break_it(scaled["spec"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(KEDA_SCHEMA).validate(scaled)


def test_inference_workers_scale_on_waiting_plus_reserved_inference_messages():
    assert {scaled["spec"]["scaleTargetRef"]["name"] for scaled in SCALED} == {
        "worker-cpu", "worker-gpu"}
    for scaled in SCALED:
        spec = scaled["spec"]
        target = BY_KIND["Deployment"][spec["scaleTargetRef"]["name"]]
        assert "replicas" not in target["spec"], "KEDA owns the replica count"
        triggers = {trigger["name"]: trigger for trigger in spec["triggers"]}
        modifiers = spec["advanced"]["scalingModifiers"]
        assert set(re.findall(r"[A-Za-z_]\w*", modifiers["formula"])) == set(triggers)
        assert modifiers["formula"].replace(" ", "") == "waiting+reserved"
        assert modifiers["metricType"] == "AverageValue" and float(modifiers["target"]) > 0
        assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]

        for state, trigger in triggers.items():  # waiting, in every priority's list; reserved
            assert trigger["type"] == "prometheus"
            query = trigger["metadata"]["query"]
            assert metric_names(query) == {"dermscreen_queue_messages"}
            assert dict((label, value) for _, label, _, value in matchers(query)) == {
                "queue": queues.INFERENCE, "state": state}
            assert query.startswith("max("), "every web replica reports the same value"
    assert BY_KIND["ScaledObject"]["worker-gpu"]["spec"]["minReplicaCount"] == 0
    assert BY_KIND["ScaledObject"]["worker-cpu"]["spec"]["minReplicaCount"] >= 1  # ingest


def test_every_container_gets_the_same_settings():
    settings = {f"DERMSCREEN_{field.name.upper()}" for field in fields(Config)}
    extra = {"REDIS_ADDRESS", "REDIS_PASSWORD"}
    for key in set(CONFIG) | set(SECRET):
        assert key in settings | extra, f"{key} is not a Config field"
    for workload in WORKLOADS.values():
        for container in containers(workload):
            assert container["envFrom"] == [{"configMapRef": {"name": "dermscreen-config"}},
                                            {"secretRef": {"name": "dermscreen-secrets"}}]
            env = {item["name"]: item["value"] for item in container["env"]}
            assert env.pop("DERMSCREEN_BROKER_URL") == BROKER_URL, ident(workload)
            assert set(env) <= {"PROMETHEUS_MULTIPROC_DIR"}, ident(workload)
            mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
            assert CONFIG["DERMSCREEN_HOME"] in mounts, "scratch space on an emptyDir"
    assert CONFIG["DERMSCREEN_STORE_URL"].startswith("s3://"), "nodes share no directory"
    assert "DERMSCREEN_STORE_DIR" not in CONFIG
    for secret in ("DERMSCREEN_DATABASE_URL", "DERMSCREEN_SECRET_KEY",
                   "DERMSCREEN_S3_SECRET_ACCESS_KEY"):
        assert secret in SECRET and secret not in CONFIG


def run(argv: list[str], monkeypatch, tmp_path) -> None:
    """Resolve a container's command against the code: dermscreen subcommands and options,
    gunicorn's app factory, celery's --app module."""
    monkeypatch.setenv("DERMSCREEN_HOME", str(tmp_path))
    if argv[0] == "dermscreen":
        parse_dermscreen(argv)
    elif argv[0] == "gunicorn":
        module, _, call = argv[-1].partition(":")
        assert call == "create_app()"
        assert importlib.import_module(module).create_app().name == "dermscreen.web"
    else:
        assert argv[0] == "celery"
        assert importlib.import_module(option(argv, "--app")).app.main == "dermscreen"


@pytest.mark.parametrize("name, wanted", [
    ("worker-cpu", {queues.INGEST, queues.INFERENCE}),
    ("worker-gpu", {queues.INFERENCE}),
    ("notifier", {queues.NOTIFY}),
])
def test_workers_consume_their_queues(name, wanted, monkeypatch, tmp_path):
    container, = containers(BY_KIND["Deployment"][name])
    run(container["command"], monkeypatch, tmp_path)
    assert container["command"][:2] == ["dermscreen", "worker"]
    assert set(option(container["command"], "--queues").split(",")) == wanted


def test_web_beat_and_migration_run_real_commands(monkeypatch, tmp_path):
    for workload in ("web", "beat", "migrate"):
        for container in containers(WORKLOADS[workload]):
            run(container["command"], monkeypatch, tmp_path)
    job = [container["command"] for container in containers(WORKLOADS["migrate"])]
    assert job == [["dermscreen", "db", "upgrade"], ["dermscreen", "store", "init"]]
    beat = BY_KIND["Deployment"]["beat"]["spec"]
    assert beat["replicas"] == 1 and beat["strategy"]["type"] == "Recreate"
    assert "beat" in beat["template"]["spec"]["containers"][0]["command"]


def test_gpu_workers_get_a_gpu_and_the_gpu_image():
    spec = BY_KIND["Deployment"]["worker-gpu"]["spec"]["template"]["spec"]
    container, = spec["containers"]
    assert container["image"] == "dermscreen-gpu"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert option(container["command"], "--concurrency") == "1"
    for workload in WORKLOADS.values():
        if workload is not BY_KIND["Deployment"]["worker-gpu"]:
            assert all(c["image"] == "dermscreen" for c in containers(workload))


def test_prometheus_scrapes_every_exporter_on_its_port():
    web = BY_KIND["Deployment"]["web"]
    service = BY_KIND["Service"]["web"]
    assert service["spec"]["selector"] == web["spec"]["selector"]["matchLabels"]
    for name in ("web", "worker-cpu", "worker-gpu", "notifier"):
        template = BY_KIND["Deployment"][name]["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        ports = {port["containerPort"] for port in template["spec"]["containers"][0]["ports"]}
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/path"] == "/metrics"
        assert int(annotations["prometheus.io/port"]) in ports, name
        if name != "web":  # `dermscreen worker` serves on DERMSCREEN_METRICS_PORT
            assert int(annotations["prometheus.io/port"]) == int(CONFIG["DERMSCREEN_METRICS_PORT"])
    # gunicorn's processes count together only with a multiprocess directory
    env = {item["name"]: item["value"] for item in web["spec"]["template"]["spec"]["containers"][0]["env"]}
    mounts = {m["mountPath"] for m in web["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert env["PROMETHEUS_MULTIPROC_DIR"] in mounts


def test_queries_read_only_what_the_code_exports():
    exported = exported_names()
    for scaled in SCALED:
        for trigger in scaled["spec"]["triggers"]:
            query = trigger["metadata"].get("query")
            if query:
                assert metric_names(query) <= exported
                assert unknown_label_values(query) == []
