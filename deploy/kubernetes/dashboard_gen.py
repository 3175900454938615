"""Generate deploy/kubernetes/grafana-dashboard.yml from grafana/imagesec-exporter.json.

Run ``python deploy/kubernetes/dashboard_gen.py`` after changing the dashboard;
tests/test_deploy.py fails while the committed ConfigMap differs from what this builds.

kube-prometheus-stack's Grafana runs a sidecar that loads every ConfigMap labelled
``grafana_dashboard: "1"`` (in its own namespace, or all namespaces with
``sidecar.dashboards.searchNamespace: ALL``). Provisioned dashboards skip the import dialog, so the
``${DS_PROMETHEUS}`` input becomes the data source uid kube-prometheus-stack provisions,
``prometheus``; the dashboard's data source variable still lets a viewer pick another.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "grafana" / "imagesec-exporter.json"
OUTPUT = Path(__file__).with_name("grafana-dashboard.yml")
DATASOURCE_UID = "prometheus"

HEADER = """\
# GENERATED from grafana/imagesec-exporter.json by deploy/kubernetes/dashboard_gen.py: edit those.
# kube-prometheus-stack's Grafana sidecar loads ConfigMaps labelled grafana_dashboard: "1" from its
# namespace (or from all, with sidecar.dashboards.searchNamespace: ALL). The dashboard reads the
# recording rules of prometheusrule.yml: apply both.
"""


def build() -> dict[str, object]:
    model = json.loads(DASHBOARD.read_text())
    for key in ("__inputs", "__requires"):
        model.pop(key, None)
    text = json.dumps(model, indent=1, sort_keys=True, ensure_ascii=False)
    text = text.replace("${DS_PROMETHEUS}", DATASOURCE_UID)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "imagesec-exporter-dashboard",
            "labels": {"app.kubernetes.io/name": "imagesec-exporter", "grafana_dashboard": "1"},
        },
        "data": {"imagesec-exporter.json": text + "\n"},
    }


class _Dumper(yaml.SafeDumper):
    """The dashboard JSON as a literal block, readable in a diff."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render() -> str:
    body = yaml.dump(build(), Dumper=_Dumper, sort_keys=False, width=1000, allow_unicode=True)
    return HEADER + body


def main() -> int:
    OUTPUT.write_text(render())
    sys.stdout.write(f"wrote {OUTPUT}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
