"""The deployment files, checked without a container daemon or a cluster: the compose file against the Compose
specification, the Kubernetes manifests against the API schemas, the Prometheus config with `promtool`, the
Grafana dashboard's queries against the metrics the service exposes, and the images the manifests name against
the Dockerfile's targets."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from app.api.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
K8S = sorted((REPO / "deploy" / "k8s").glob("*.yaml"))
PROMETHEUS = REPO / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARDS = sorted((REPO / "deploy" / "grafana" / "dashboards").glob("*.json"))
KUBERNETES_VERSION = "1.37.0"
METRIC_NAME = re.compile(r"\b(asr_[a-zA-Z0-9_]+)\b")


def check_compose(path: Path) -> subprocess.CompletedProcess:
    """check-jsonschema with its vendored copy of the Compose specification's schema (no network)."""
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                           str(path)], capture_output=True, text=True)


def test_compose_file_follows_the_compose_specification():
    result = check_compose(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_check_catches_a_misspelled_key(tmp_path):
    broken = tmp_path / "compose.yml"
    broken.write_text(COMPOSE.read_text().replace("healthcheck:", "healthchek:", 1))
    assert check_compose(broken).returncode != 0


def test_compose_services_have_healthchecks_and_the_secrets_come_from_the_environment():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert all("healthcheck" in service for service in services.values())
    assert services["prometheus"]["depends_on"]["asr"]["condition"] == "service_healthy"
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    assert services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD")
    assert services["asr-gpu"]["profiles"] == ["gpu"]


def test_kubernetes_manifests_follow_the_api_schemas():
    import kubernetes_validate

    for path in K8S:
        for document in yaml.safe_load_all(path.read_text()):
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_kubernetes_check_catches_an_unknown_field():
    import kubernetes_validate

    deployment = yaml.safe_load((REPO / "deploy" / "k8s" / "deployment.yaml").read_text())
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def dockerfile_targets() -> set[str]:
    """Stage names of the Dockerfile (`FROM image AS name`)."""
    return set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", (REPO / "Dockerfile").read_text(), re.MULTILINE))


def test_images_named_by_deployments_are_dockerfile_targets():
    targets = dockerfile_targets()
    deployment = yaml.safe_load((REPO / "deploy" / "k8s" / "deployment.yaml").read_text())
    requests_gpu = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert "nvidia.com/gpu" in requests_gpu and image.endswith(":cuda") and "cuda" in targets
    for service in yaml.safe_load(COMPOSE.read_text())["services"].values():
        if "build" in service:
            assert service["build"]["target"] in targets
            assert service["image"].endswith(":" + service["build"]["target"])


def test_build_context_leaves_out_the_environment_and_history():
    ignored = {line.strip().rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()}
    assert {".venv", ".git", "tests"} <= ignored


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: `make system-deps` installs Debian's prometheus")
    return path


def test_prometheus_config_passes_promtool():
    result = subprocess.run([promtool(), "check", "config", str(PROMETHEUS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_catches_a_broken_config(tmp_path):
    broken = tmp_path / "prometheus.yml"
    broken.write_text(PROMETHEUS.read_text().replace("scrape_interval: 5s", "scrape_interval: five"))
    result = subprocess.run([promtool(), "check", "config", str(broken)], capture_output=True, text=True)
    assert result.returncode != 0


def exposed_series_names() -> set[str]:
    """Every series name the service's registry can expose (a labelled family has none before first use, so
    names come from the family types rather than from a scrape)."""
    suffixes = {"counter": ("_total", "_created"), "gauge": ("",), "info": ("_info",),
                "histogram": ("_bucket", "_sum", "_count", "_created"), "summary": ("", "_sum", "_count")}
    names = set()
    for family in Metrics().registry.collect():
        names |= {family.name + suffix for suffix in suffixes[family.type]}
    return names


def dashboard_queries() -> list[str]:
    queries = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            queries += [target["expr"] for target in panel.get("targets", [])]
    return queries


def test_every_dashboard_query_names_metrics_the_service_exposes():
    exposed = exposed_series_names()
    queries = dashboard_queries()
    assert queries
    for query in queries:
        named = set(METRIC_NAME.findall(query))
        assert named, f"query names no asr_ metric: {query}"
        assert named <= exposed, f"{query}: {sorted(named - exposed)} not exposed"
