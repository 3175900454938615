"""Generate deploy/kubernetes/prometheusrule.yml from alerts/imagesec.rules.yml.

Run ``python deploy/kubernetes/prometheusrule_gen.py`` after changing the rules;
tests/test_deploy.py fails while the committed PrometheusRule differs from what this builds.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "alerts" / "imagesec.rules.yml"
OUTPUT = Path(__file__).with_name("prometheusrule.yml")

RELEASE = "kube-prometheus-stack"
"""kube-prometheus-stack selects rules and ServiceMonitors labelled ``release: <release name>``;
change it (here and in servicemonitor.yml) when your Helm release has another name."""

HEADER = """\
# GENERATED from alerts/imagesec.rules.yml by deploy/kubernetes/prometheusrule_gen.py: edit those.
# The recording rules (repo:...) feed the dashboard; the alerts page per repository.
# The Prometheus Operator loads it when its ruleSelector matches these labels: kube-prometheus-stack
# selects release: <its Helm release name>; change `release` if yours is not kube-prometheus-stack.
"""


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the PromQL expressions) as literal blocks, as in the rules file."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def build() -> dict[str, object]:
    """The PrometheusRule object, its spec the rules file's groups, unchanged."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "imagesec-exporter",
            "labels": {"app.kubernetes.io/name": "imagesec-exporter", "release": RELEASE},
        },
        "spec": {"groups": groups},
    }


def render() -> str:
    body = yaml.dump(build(), Dumper=_Dumper, sort_keys=False, width=1000, allow_unicode=True)
    return HEADER + body


def main() -> int:
    OUTPUT.write_text(render())
    sys.stdout.write(f"wrote {OUTPUT}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
