"""The files under deploy/, read as the tests need them: alert rules, dashboard queries,
manifests and the compose file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
COMPOSE_CONFIG = DEPLOY / "compose" / "config" / "gateway.yaml"
K8S = DEPLOY / "k8s"
OPERATIONS = ROOT / "docs" / "operations.md"


@dataclass(frozen=True)
class Query:
    where: str  # "alert X" or "dashboard/panel"
    expr: str
    legend: str = ""


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


def queries() -> list[Query]:
    """Every PromQL expression of the alert rules and the dashboards (Grafana's variables
    left in: see promql.grafana_to_promql)."""
    found = [Query(f"alert {r['alert']}", r["expr"]) for r in alert_rules()]
    for name, board in dashboards().items():
        for panel in panels(board):
            where = f"{name}/{panel['title']}"
            for target in panel.get("targets", []):
                found.append(Query(where, target["expr"], target.get("legendFormat", "")))
        for variable in board["templating"]["list"]:
            if variable["type"] == "query":
                found.append(Query(f"{name}/${variable['name']}", variable["definition"]))
    return found


def manifests() -> dict[str, dict[str, Any]]:
    """deploy/k8s's resources by kind/name, as kustomization.yaml lists them."""
    kustomization = load_yaml(K8S / "kustomization.yaml")
    found = {}
    for resource in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / resource).read_text()):
            found[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return found
