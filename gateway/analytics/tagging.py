"""Tagging compliance per team: the share of spend that is fully tagged, where "fully" is what
the `policies.tags` rules governing it require (their scope judged on the spend's own project,
environment, workload and tags, by the same `config.policies` code the request path uses).

Read from the daily charge lines (`rollupformat.LINE_PARTS`), which carry each charge's
attribution: requests, cache hits and posted external costs alike. Spend no tag policy governs
needs nothing and counts as tagged. Pure: rollups in, figures out (a later scorecard reads it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import orjson

from gateway.analytics.rollupdata import RollupData
from gateway.config.policies import PoliciesConfig, has_tag
from gateway.rollupformat import LINE_PARTS, MISSING, split_parts
from gateway.types import EMPTY_TAGS, Principal, nano_to_usd_str


@dataclass(frozen=True, slots=True)
class TeamTagging:
    team: str
    spend_nano: int = 0
    tagged_nano: int = 0
    # tag key -> spend that lacked it (a charge lacking two keys counts under both)
    missing_nano: Mapping[str, int] = field(default_factory=dict)

    @property
    def untagged_nano(self) -> int:
        return self.spend_nano - self.tagged_nano

    @property
    def compliance(self) -> float | None:
        """Fully tagged spend over all spend, 0..1; None without spend."""
        return self.tagged_nano / self.spend_nano if self.spend_nano else None

    def to_dict(self) -> dict[str, Any]:
        share = self.compliance
        return {
            "team": self.team,
            "spend_usd": nano_to_usd_str(self.spend_nano),
            "tagged_usd": nano_to_usd_str(self.tagged_nano),
            "untagged_usd": nano_to_usd_str(self.untagged_nano),
            "compliance": None if share is None else round(share, 6),
            "missing_usd": {k: nano_to_usd_str(v) for k, v in sorted(self.missing_nano.items())},
        }


@dataclass(frozen=True, slots=True)
class Tagging:
    teams: tuple[TeamTagging, ...]
    total: TeamTagging
    required: bool  # whether any tag policy requires anything

    def to_dict(self) -> dict[str, Any]:
        return {
            "required": self.required,
            "teams": [t.to_dict() for t in self.teams],
            "total": self.total.to_dict(),
        }


def tagging_compliance(
    data: RollupData, policies: PoliciesConfig, teams: Mapping[str, object] | None = None
) -> Tagging:
    """Each team's tagging compliance over the data's days (`teams`: the configured ones, also
    listed without spend)."""
    names = sorted({*data.teams(), *(teams or {})})
    results = tuple(_team(data, team, policies) for team in names)
    missing: dict[str, int] = {}
    for result in results:
        for key, amount in result.missing_nano.items():
            missing[key] = missing.get(key, 0) + amount
    total = TeamTagging(
        "*",
        sum(t.spend_nano for t in results),
        sum(t.tagged_nano for t in results),
        MappingProxyType(missing),
    )
    return Tagging(results, total, bool(policies.tags))


def _team(data: RollupData, team: str, policies: PoliciesConfig) -> TeamTagging:
    spend = tagged = 0
    missing: dict[str, int] = {}
    for value, metrics in data.values(team, "line").items():
        cost = metrics.get("cost", 0)
        if not cost:
            continue
        subject = _subject(team, value)
        lacking = [k for k in policies.required_tags(subject) if not has_tag(subject, k)]
        spend += cost
        if not lacking:
            tagged += cost
        for key in lacking:
            missing[key] = missing.get(key, 0) + cost
    return TeamTagging(team, spend, tagged, MappingProxyType(missing))


def _subject(team: str, value: str) -> Principal:
    """Who a charge line was billed to, as a policy's scope sees a request's principal."""
    line = dict(zip(LINE_PARTS, split_parts(value), strict=False))
    raw_tags = line.get("tags", MISSING)
    tags = EMPTY_TAGS if raw_tags == MISSING else MappingProxyType(dict(orjson.loads(raw_tags)))
    return Principal(
        key_id="",
        team=team,
        project=_given(line.get("project")),
        environment=_given(line.get("environment")),
        workload=_given(line.get("workload")),
        tags=tags,
    )


def _given(value: str | None) -> str | None:
    return None if value is None or value == MISSING else value
