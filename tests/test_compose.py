"""docker-compose.yml and the Dockerfile, checked as far as can be without a Docker engine:
structure, and that every command, module, option, file and setting they name exists."""

import importlib
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from dataclasses import fields
from pathlib import Path

import click
import pytest
import yaml

from dermscreen.cli import main
from dermscreen.config import Config
from dermscreen.worker import queues

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
GPU_DOCKERFILE = (ROOT / "docker" / "gpu.Dockerfile").read_text()
APP_SERVICES = [name for name, service in SERVICES.items()
                if service.get("image", "").startswith("dermscreen")]
SCALED = ["worker-cpu", "worker-gpu", "notifier"]


def command(name: str) -> list[str]:
    value = SERVICES[name]["command"]
    return shlex.split(value) if isinstance(value, str) else list(value)


def option(argv: list[str], name: str) -> str:
    """The value of ``--name value`` or ``--name=value`` in argv."""
    for index, arg in enumerate(argv):
        if arg == name:
            return argv[index + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{name} not in {argv}")


def parse_dermscreen(argv: list[str]) -> click.Context:
    """Resolve ``dermscreen SUB [SUB...] ARGS`` to its click command and parse ARGS (no run)."""
    assert argv[0] == "dermscreen"
    context = main.make_context("dermscreen", [], resilient_parsing=True)
    command, args = main, argv[1:]
    while isinstance(command, click.Group):
        command = command.get_command(context, args[0])
        assert command is not None, f"no such subcommand in {argv}"
        context, args = None, args[1:]
        if isinstance(command, click.Group):
            context = command.make_context(command.name, [], resilient_parsing=True)
    return command.make_context(command.name, list(args))


def test_every_service_is_there():
    assert set(SERVICES) == {"postgres", "redis", "minio", "bucket", "migrate", "web", "worker-cpu",
                             "worker-gpu", "notifier", "beat", "flower"}
    assert set(APP_SERVICES) == set(SERVICES) - {"postgres", "redis", "minio"}


def test_postgres_keeps_its_data_and_reports_health():
    postgres = SERVICES["postgres"]
    assert any(volume.endswith(":/var/lib/postgresql/data") for volume in postgres["volumes"])
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])


def test_redis_persists_with_append_only_file():
    redis = SERVICES["redis"]
    argv = command("redis")
    assert option(argv, "--appendonly") == "yes"
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
    assert "ping" in redis["healthcheck"]["test"]


def test_named_volumes_are_declared():
    for service in SERVICES.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source in COMPOSE["volumes"], volume


def test_images_live_in_minio_and_no_service_shares_a_directory():
    minio = SERVICES["minio"]
    assert minio["image"].startswith("minio/minio:") and command("minio")[:2] == ["server", "/data"]
    assert any(volume.endswith(":/data") for volume in minio["volumes"])
    for name in APP_SERVICES:
        service = SERVICES[name]
        assert "volumes" not in service, name
        environment = service["environment"]
        assert environment["DERMSCREEN_STORE_URL"].startswith("s3://"), name
        assert "DERMSCREEN_STORE_DIR" not in environment, name
        assert environment["DERMSCREEN_S3_ENDPOINT_URL"] == "http://minio:9000", name
    parse_dermscreen(command("bucket"))
    assert command("bucket") == ["dermscreen", "store", "init"]
    assert SERVICES["bucket"]["depends_on"]["minio"]["condition"] == "service_healthy"
    for name in set(APP_SERVICES) - {"migrate", "bucket"}:
        assert SERVICES[name]["depends_on"]["bucket"]["condition"] == \
            "service_completed_successfully", name


def test_migration_runs_once_before_everything_that_uses_the_database():
    migrate = SERVICES["migrate"]
    parse_dermscreen(command("migrate"))
    assert command("migrate") == ["dermscreen", "db", "upgrade"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in set(APP_SERVICES) - {"migrate"}:
        depends = SERVICES[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["redis"]["condition"] == "service_healthy", name


def test_web_runs_the_app_factory_under_gunicorn(monkeypatch, tmp_path):
    argv = command("web")
    assert argv[0] == "gunicorn"
    module_name, _, call = argv[-1].partition(":")
    assert call == "create_app()"
    monkeypatch.setenv("DERMSCREEN_HOME", str(tmp_path))
    factory = importlib.import_module(module_name).create_app
    assert factory().name == "dermscreen.web"
    assert SERVICES["web"]["healthcheck"]["test"] == ["CMD", "dermscreen-healthcheck"]
    assert "/usr/local/bin/dermscreen-healthcheck" in DOCKERFILE


@pytest.mark.parametrize("service, wanted", [
    ("worker-cpu", {queues.INGEST, queues.INFERENCE}),
    ("worker-gpu", {queues.INFERENCE}),
    ("notifier", {queues.NOTIFY}),
])
def test_workers_consume_their_queues(service, wanted):
    argv = command(service)
    parse_dermscreen(argv)  # the subcommand and every option exist
    assert argv[:2] == ["dermscreen", "worker"]
    assert set(option(argv, "--queues").split(",")) == wanted


def test_gpu_workers_reserve_an_nvidia_gpu_and_run_onnx_runtime_on_cuda():
    gpu = SERVICES["worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert gpu["build"]["dockerfile"] == "docker/gpu.Dockerfile"
    assert re.search(r"^FROM nvidia/cuda:12[\d.]+-cudnn-runtime-", GPU_DOCKERFILE, re.MULTILINE)
    assert "pip uninstall -y onnxruntime" in GPU_DOCKERFILE
    assert re.search(r'^ARG ONNXRUNTIME_GPU=[\d.]+$', GPU_DOCKERFILE, re.MULTILINE)
    assert '"onnxruntime-gpu==${ONNXRUNTIME_GPU}"' in GPU_DOCKERFILE
    assert "tensorflow" not in DOCKERFILE + GPU_DOCKERFILE  # TensorFlow is the project's own pin


def test_scaled_services_can_be_scaled():
    for name in SCALED:
        assert "container_name" not in SERVICES[name], name
        assert "ports" not in SERVICES[name], name


def test_beat_and_flower_find_the_celery_app(monkeypatch, tmp_path):
    monkeypatch.setenv("DERMSCREEN_HOME", str(tmp_path))
    for name, subcommand in (("beat", "beat"), ("flower", "flower")):
        argv = command(name)
        assert argv[0] == "celery" and subcommand in argv
        module = importlib.import_module(option(argv, "--app"))
        assert module.app.main == "dermscreen"
    assert queues.RECONCILE_TASK in {entry["task"]
                                     for entry in module.app.conf.beat_schedule.values()}
    assert option(command("flower"), "--broker") == \
        SERVICES["flower"]["environment"]["DERMSCREEN_BROKER_URL"]
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert any(requirement.startswith("flower") for requirement in extras["monitor"])
    assert '".[monitor]"' in DOCKERFILE


def test_settings_are_config_fields():
    names = {f"DERMSCREEN_{field.name.upper()}" for field in fields(Config)}
    for name in APP_SERVICES:
        for variable in SERVICES[name]["environment"]:
            if variable.startswith("DERMSCREEN_"):
                assert variable in names, f"{name}: {variable} is not a Config field"


def test_build_contexts_and_copied_files_exist():
    for name in APP_SERVICES:
        build = SERVICES[name]["build"]
        assert (ROOT / build["context"] / build["dockerfile"]).is_file()
    for line in re.findall(r"^COPY (.+)$", DOCKERFILE + GPU_DOCKERFILE, re.MULTILINE):
        sources = [part for part in line.split() if not part.startswith("--")][:-1]
        for source in sources:
            assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"


def test_healthcheck_script_reports_health(app):
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    script = str(ROOT / "docker" / "healthcheck.py")
    try:
        url = f"http://127.0.0.1:{server.port}/api/v1/openapi.json"
        assert subprocess.run([sys.executable, script, url]).returncode == 0
        missing = f"http://127.0.0.1:{server.port}/api/v1/missing"
        assert subprocess.run([sys.executable, script, missing],
                              capture_output=True).returncode == 1
    finally:
        server.shutdown()
