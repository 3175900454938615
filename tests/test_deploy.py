"""Deployment examples: they parse, agree with each other and with alerts/ and the Dockerfile."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
SCRAPE_CONFIG = DEPLOY / "prometheus" / "scrape-config.yml"
RULES = ROOT / "alerts" / "imagesec.rules.yml"
JOB = "imagesec-exporter"
CREDENTIAL_VARIABLES = {
    "ALIBABA_CLOUD_ACCESS_KEY_ID",
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
    "TENCENTCLOUD_SECRET_ID",
    "TENCENTCLOUD_SECRET_KEY",
}


def _manifests() -> dict[str, dict]:
    """Every Kubernetes object of deploy/kubernetes by kind (one object of each kind; the
    dashboard's ConfigMap, the second, as "DashboardConfigMap")."""
    objects: dict[str, dict] = {}
    for path in sorted(K8S.glob("*.yml")):
        for document in yaml.safe_load_all(path.read_text()):
            kind = document["kind"]
            if kind == "ConfigMap" and document["metadata"]["name"].endswith("-dashboard"):
                kind = "DashboardConfigMap"
            assert kind not in objects, f"second {kind} in {path.name}"
            objects[kind] = document
    return objects


def _container() -> dict:
    (container,) = _manifests()["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "imagesec_prometheusrule", K8S / "prometheusrule_gen.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", sorted(DEPLOY.rglob("*.yml")), ids=lambda p: p.name)
def test_yaml_parses(path: Path) -> None:
    documents = list(yaml.safe_load_all(path.read_text()))
    assert documents and all(isinstance(d, dict) for d in documents)


def test_the_expected_objects_exist() -> None:
    assert set(_manifests()) == {
        "ConfigMap",
        "DashboardConfigMap",
        "Deployment",
        "Kustomization",
        "PrometheusRule",
        "Secret",
        "Service",
        "ServiceMonitor",
    }


def test_kustomization_lists_everything_but_the_example_secret() -> None:
    resources = _manifests()["Kustomization"]["resources"]
    assert all((K8S / name).is_file() for name in resources)
    on_disk = {p.name for p in K8S.glob("*.yml")} - {"kustomization.yml"}
    assert set(resources) == on_disk - {"secret.example.yml"}


def test_prometheusrule_embeds_exactly_the_alert_rules() -> None:
    rule = _manifests()["PrometheusRule"]
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def test_prometheusrule_file_is_current() -> None:
    assert (K8S / "prometheusrule.yml").read_text() == _generator().render(), (
        "deploy/kubernetes/prometheusrule.yml is out of date: "
        "run python deploy/kubernetes/prometheusrule_gen.py"
    )


def test_service_servicemonitor_and_container_ports_agree() -> None:
    objects = _manifests()
    (port,) = objects["Service"]["spec"]["ports"]
    (container_port,) = _container()["ports"]
    (endpoint,) = objects["ServiceMonitor"]["spec"]["endpoints"]
    assert port["targetPort"] == container_port["name"] == endpoint["port"] == port["name"]
    assert port["port"] == container_port["containerPort"] == 9879
    assert f"--web.listen-address=:{container_port['containerPort']}" in _container()["args"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert _container()[probe]["httpGet"]["port"] == container_port["name"]
    assert "--web.probes-without-auth" in _container()["args"]  # probes send no password
    assert _container()["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    assert _container()["readinessProbe"]["httpGet"]["path"] == "/-/ready"


def test_selectors_match_labels() -> None:
    objects = _manifests()
    pod_labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    service = objects["Service"]
    monitor = objects["ServiceMonitor"]["spec"]
    assert objects["Deployment"]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    # The job label the alerts select on.
    assert service["metadata"]["labels"][monitor["jobLabel"]] == JOB


def test_credentials_come_from_the_secret_only() -> None:
    objects = _manifests()
    container = _container()
    assert container["envFrom"] == [{"secretRef": {"name": objects["Secret"]["metadata"]["name"]}}]
    assert set(objects["Secret"]["stringData"]) == CREDENTIAL_VARIABLES
    assert all(v.startswith("<") for v in objects["Secret"]["stringData"].values())
    for kind, manifest in objects.items():
        if kind != "Secret":
            text = yaml.safe_dump(manifest)
            assert not any(name in text for name in CREDENTIAL_VARIABLES), kind


def test_config_is_mounted_where_the_image_looks_and_runs_as_the_image_user() -> None:
    container = _container()
    pod = _manifests()["Deployment"]["spec"]["template"]["spec"]
    (config_mount,) = [m for m in container["volumeMounts"] if m["name"] == "config"]
    assert f"--config.file={config_mount['mountPath']}/config.yml" in container["args"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f'CMD ["--config.file={config_mount["mountPath"]}/config.yml"]' in dockerfile
    user = re.search(r"^USER (\d+):(\d+)$", dockerfile, flags=re.MULTILINE)
    assert user
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (
        int(user.group(1)),
        int(user.group(2)),
    )
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_configmap_config_passes_check_config(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text(_manifests()["ConfigMap"]["data"]["config.yml"])
    env = {
        **os.environ,
        "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI5tTestKeyId0000000",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "TestSecret0000000000000000000",
        "TENCENTCLOUD_SECRET_ID": "AKIDTestSecretId00000000000000000000",
        "TENCENTCLOUD_SECRET_KEY": "TestSecretKey000000000000000000",
    }
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "--check-config", f"--config.file={config}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_scrape_config_passes_promtool_and_names_the_alerted_job() -> None:
    result = subprocess.run(
        [require_tool("promtool"), "check", "config", str(SCRAPE_CONFIG)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == JOB
    assert job["static_configs"][0]["targets"] == ["imagesec-exporter:9879"]
    assert (SCRAPE_CONFIG.parent / config["rule_files"][0]).resolve() == RULES
    assert f'up{{job="{JOB}"}}' in RULES.read_text()


def _dashboard_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("imagesec_dashboard_cm", K8S / "dashboard_gen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dashboard_configmap_is_current_and_carries_the_sidecar_label() -> None:
    assert (K8S / "grafana-dashboard.yml").read_text() == _dashboard_generator().render(), (
        "run python deploy/kubernetes/dashboard_gen.py"
    )
    config_map = _manifests()["DashboardConfigMap"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = config_map["data"].values()
    dashboard = json.loads(text)
    committed = json.loads((ROOT / "grafana" / "imagesec-exporter.json").read_text())
    assert dashboard["uid"] == committed["uid"]
    assert [p["title"] for p in dashboard["panels"]] == [p["title"] for p in committed["panels"]]
    assert "${DS_PROMETHEUS}" not in text and "__inputs" not in dashboard
    (datasource,) = [v for v in dashboard["templating"]["list"] if v["name"] == "datasource"]
    assert datasource["current"]["value"] == "prometheus"


def test_rules_and_servicemonitor_carry_the_same_release_label() -> None:
    objects = _manifests()
    release = _generator().RELEASE
    for kind in ("PrometheusRule", "ServiceMonitor"):
        assert objects[kind]["metadata"]["labels"]["release"] == release, kind


def test_resources_are_sized_for_50k_images() -> None:
    """Requests and a memory limit: 2x the 250 MB target at 50k images; no CPU limit."""
    resources = _container()["resources"]
    assert resources["requests"]["memory"] == "320Mi" and resources["requests"]["cpu"]
    assert resources["limits"] == {"memory": "512Mi"}


def test_license_file_matches_the_declared_license() -> None:
    assert 'license = "Apache-2.0"' in (ROOT / "pyproject.toml").read_text()
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
