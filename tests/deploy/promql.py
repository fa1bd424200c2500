"""What a PromQL expression reads, from its syntax tree (promql-parser): the metrics it selects
with the labels it names, and the labels its result carries (what an alert's `{{ $labels.x }}`
or a Grafana legend's `{{x}}` may use).

Target labels (`job`, `instance`) are Prometheus's, added to every scraped series.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import promql_parser as pq

TARGET_LABELS = frozenset({"job", "instance"})
# Synthetic series Prometheus writes itself, with the target labels only.
SYNTHETIC = {"up": TARGET_LABELS}

# Grafana's interval variables, and a multi-value variable inside a regex matcher.
_GRAFANA_INTERVALS = {"$__rate_interval": "5m", "$__range": "6h", "$__interval": "1m"}
_GRAFANA_VARIABLE = re.compile(r"\$\{?\w+\}?")
_LABEL_VALUES = re.compile(r"label_values\((?P<metric>\w+),\s*(?P<label>\w+)\)")


@dataclass
class Usage:
    """metric name -> the labels the expression names for it (matchers, and grouping labels
    that only this metric's subtree can supply)."""

    labels: dict[str, set[str]] = field(default_factory=dict)
    grouping: list[tuple[frozenset[str], frozenset[str]]] = field(default_factory=list)
    """(labels named by by/without/on/ignoring/group_*, metrics of the subtree they apply to)"""

    def problems(self, exported: Mapping[str, frozenset[str]]) -> list[str]:
        """What the expression uses that `exported` (name -> labels) does not have."""
        found = []
        for name, labels in sorted(self.labels.items()):
            if name not in exported:
                found.append(f"metric {name} is not exported")
                continue
            missing = labels - exported[name] - TARGET_LABELS
            if missing:
                found.append(f"{name} has no label {sorted(missing)}")
        for labels, metrics in self.grouping:
            known = set(TARGET_LABELS)
            for name in metrics:
                known |= exported.get(name, frozenset())
            if labels - known:
                found.append(f"no metric of {sorted(metrics)} has {sorted(labels - known)}")
        return found


def grafana_to_promql(expr: str) -> str:
    """A Grafana query as PromQL: interval variables as durations, other variables as `.*`,
    and a `label_values(metric, label)` variable query as the selector it reads."""
    values = _LABEL_VALUES.fullmatch(expr.strip())
    if values:
        expr = f'{values["metric"]}{{{values["label"]}=~".+"}}'
    for variable, value in _GRAFANA_INTERVALS.items():
        expr = expr.replace(variable, value)
    return _GRAFANA_VARIABLE.sub(".*", expr)


def usage(expr: str) -> Usage:
    found = Usage()
    _visit(pq.parse(expr), found)
    return found


def _visit(node: object, found: Usage) -> frozenset[str]:
    """Record what `node` selects; return the metric names below it."""
    if isinstance(node, pq.MatrixSelector):
        return _visit(node.vector_selector, found)
    if isinstance(node, pq.VectorSelector):
        assert node.name, f"a selector without a metric name: {node}"
        labels = found.labels.setdefault(node.name, set())
        labels.update(m.name for m in node.matchers.matchers if m.name != "__name__")
        return frozenset({node.name})
    if isinstance(node, pq.AggregateExpr):
        below = _visit(node.expr, found)
        if node.param is not None:
            _visit(node.param, found)
        if node.modifier is not None and node.modifier.labels:
            found.grouping.append((frozenset(node.modifier.labels), below))
        return below
    if isinstance(node, pq.BinaryExpr):
        below = _visit(node.lhs, found) | _visit(node.rhs, found)
        modifier = node.modifier
        if modifier is not None:
            named = set(modifier.matching.labels if modifier.matching else ())
            named |= set(modifier.group_labels or ())
            if named:
                found.grouping.append((frozenset(named), below))
        return below
    if isinstance(node, pq.Call):
        below: frozenset[str] = frozenset()
        for arg in node.args:
            below |= _visit(arg, found)
        return below
    if isinstance(node, pq.ParenExpr | pq.UnaryExpr | pq.SubqueryExpr):
        return _visit(node.expr, found)
    return frozenset()  # number and string literals


def result_labels(expr: str, exported: Mapping[str, frozenset[str]]) -> frozenset[str]:
    """The labels the expression's result series carry (for a comparison or `and`, those of
    its left side), given each metric's exported labels."""
    return _result(pq.parse(expr), exported)


def _result(node: object, exported: Mapping[str, frozenset[str]]) -> frozenset[str]:
    if isinstance(node, pq.MatrixSelector):
        return _result(node.vector_selector, exported)
    if isinstance(node, pq.VectorSelector):
        return exported.get(node.name or "", frozenset()) | TARGET_LABELS
    if isinstance(node, pq.AggregateExpr):
        modifier = node.modifier
        if modifier is None:
            return frozenset()
        if str(modifier.type).endswith("By"):
            return frozenset(modifier.labels)
        return _result(node.expr, exported) - set(modifier.labels)
    if isinstance(node, pq.BinaryExpr):
        left, right = _result(node.lhs, exported), _result(node.rhs, exported)
        if isinstance(node.lhs, pq.NumberLiteral):
            return right
        if str(node.op) == "or":
            return left | right
        group = node.modifier.group_labels if node.modifier else None
        return left | set(group or ())
    if isinstance(node, pq.Call):
        name = node.func.name
        if name in {"vector", "time", "scalar", "absent", "absent_over_time"}:
            return frozenset()  # absent() of anything but a plain selector carries none
        if name == "histogram_quantile":
            return _result(node.args[1], exported) - {"le"}
        vectors = [a for a in node.args if not isinstance(a, pq.NumberLiteral | pq.StringLiteral)]
        return _result(vectors[0], exported) if vectors else frozenset()
    if isinstance(node, pq.ParenExpr | pq.UnaryExpr | pq.SubqueryExpr):
        return _result(node.expr, exported)
    return frozenset()
