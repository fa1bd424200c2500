"""deploy/prometheus/alerts.yml: valid for Prometheus (`promtool check rules`, and the compose
Prometheus config that loads it: `promtool check config`), each alert firing when it should and
silent otherwise (`promtool test rules` on tests/deploy/alerts_test.yml), and each with a
summary, a description and a runbook that exists in docs/operations.md.

promtool comes from Debian's `prometheus` package (.ci/run installs it); where it is missing the
promtool tests skip, unless SPENDGATE_REQUIRE_PROMTOOL=1 (CI), where they fail."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.artifacts import ALERTS, DEPLOY, OPERATIONS, alert_rules, load_yaml

TESTS = Path(__file__).parent / "alerts_test.yml"


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("SPENDGATE_REQUIRE_PROMTOOL") == "1":
            pytest.fail("promtool is required (SPENDGATE_REQUIRE_PROMTOOL=1) and not on PATH")
        pytest.skip("promtool not on PATH (Debian's prometheus package has it; see .ci/run)")
    return found


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_promtool_accepts_the_rules(promtool: str) -> None:
    result = run(promtool, "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_accepts_the_compose_prometheus_config_with_its_rules(
    promtool: str, tmp_path: Path
) -> None:
    config = load_yaml(DEPLOY / "compose" / "prometheus.yml")
    # In the container the rules are mounted under /etc/prometheus/rules (compose.yaml).
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    config["rule_files"] = [str(ALERTS)]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = run(promtool, "check", "config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_every_alert_fires_when_it_should_and_not_otherwise(promtool: str, tmp_path: Path) -> None:
    # promtool compares annotations verbatim: test the expressions on rules without them.
    rules = load_yaml(ALERTS)
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations")
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    tests = load_yaml(TESTS)
    tests["rule_files"] = ["rules.yml"]
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests))
    tested = {case["alertname"] for t in tests["tests"] for case in t["alert_rule_test"]}
    assert tested == {rule["alert"] for rule in alert_rules()}  # every alert has a case
    result = run(promtool, "test", "rules", str(tmp_path / "tests.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", markdown, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def test_every_alert_says_what_happened_and_where_its_runbook_is() -> None:
    runbooks = anchors(OPERATIONS.read_text())
    names = set()
    for rule in alert_rules():
        name = rule["alert"]
        assert name not in names, f"{name} twice"
        names.add(name)
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        notes = rule["annotations"]
        assert set(notes) == {"summary", "description", "runbook_url"}, name
        assert len(notes["summary"]) <= 120 and len(notes["description"]) >= 80, name
        page, _, anchor = notes["runbook_url"].partition("#")
        assert page == "docs/operations.md", name
        assert anchor == name.lower() and anchor in runbooks, f"{name}: no runbook #{anchor}"
