"""Compile the `anomalies:` section: the section's thresholds and each team's, merged level by
level, and checked as a whole (every level at least as strict as the one below it; teams that
exist)."""

from __future__ import annotations

import itertools
from types import MappingProxyType

from gateway.config.checks import Problem, did_you_mean
from gateway.config.model import (
    DEFAULT_SEVERITY_LEVELS,
    AnomaliesConfig,
    AnomalyThresholds,
    SeverityLevel,
)
from gateway.config.schema import AnomaliesSpec, SeveritiesSpec
from gateway.types import nano_to_usd_str


def compile_anomalies(
    spec: AnomaliesSpec, teams: list[str], problems: list[Problem]
) -> AnomaliesConfig:
    base = AnomaliesSpec()
    given = _given(spec.severity)
    given |= {("low", "z")} if spec.z != base.z else set()
    given |= {("low", "usd")} if spec.min_impact_usd != base.min_impact_usd else set()
    defaults = _thresholds(
        True, spec.z, spec.min_impact_usd, spec.severity, DEFAULT_SEVERITY_LEVELS
    )
    problems.extend(_order_problems(defaults, "anomalies", given))
    per_team: dict[str, AnomalyThresholds] = {}
    for team, team_spec in spec.teams.items():
        path = f"anomalies.teams.{team}"
        if team not in teams:
            hint = did_you_mean(team, teams) or f" (defined: {', '.join(teams) or 'none'})"
            problems.append((path, f"team {team!r} is not defined in teams{hint}"))
            continue
        if team_spec is None:
            continue  # its own problem is recorded
        low = defaults.levels[0]
        per_team[team] = thresholds = _thresholds(
            defaults.enabled if team_spec.enabled is None else team_spec.enabled,
            low.z if team_spec.z is None else team_spec.z,
            low.min_nano if team_spec.min_impact_usd is None else team_spec.min_impact_usd,
            team_spec.severity,
            defaults.levels[1:],
        )
        given = _given(team_spec.severity)
        given |= {("low", "z")} if team_spec.z is not None else set()
        given |= {("low", "usd")} if team_spec.min_impact_usd is not None else set()
        problems.extend(_order_problems(thresholds, path, given))
    return AnomaliesConfig(
        enabled=spec.enabled,
        bucket_s=spec.bucket_s,
        seasonal_weeks=spec.seasonal_weeks,
        cold_start_buckets=spec.cold_start_buckets,
        cold_start_min_nano=spec.cold_start_min_usd,
        resolve_after_buckets=spec.resolve_after_buckets,
        drop_buckets=spec.drop_buckets,
        drift_days=spec.drift_days,
        drift_min_rise=spec.drift_min_rise_pct / 100,
        expected_suppress_s=spec.expected_suppress_days * 86400,
        defaults=defaults,
        teams=MappingProxyType(per_team),
    )


def _thresholds(
    enabled: bool,
    z: float,
    min_nano: int,
    severity: SeveritiesSpec,
    inherited: tuple[SeverityLevel, ...],
) -> AnomalyThresholds:
    levels = [SeverityLevel("low", z, min_nano)]
    for base in inherited:
        given = getattr(severity, base.name)
        levels.append(
            SeverityLevel(
                base.name,
                base.z if given.z is None else given.z,
                base.min_nano if given.usd is None else given.usd,
            )
        )
    return AnomalyThresholds(enabled, tuple(levels))


def _given(severity: SeveritiesSpec) -> set[tuple[str, str]]:
    """(level, "z" | "usd") of the values a section or team writes itself."""
    return {
        (level, key)
        for level in ("medium", "high", "critical")
        for key in ("z", "usd")
        if getattr(getattr(severity, level), key) is not None
    }


def _order_problems(
    thresholds: AnomalyThresholds, path: str, given: set[tuple[str, str]]
) -> list[Problem]:
    """Each level must ask at least as much as the one below it, or it could never be reached
    before it. Said at the value this section (or team) wrote itself; a conflict between
    inherited values is the section's own problem."""
    problems: list[Problem] = []
    levels = thresholds.levels
    for below, level in itertools.pairwise(levels):
        for attr, key, unit in (("z", "z", ""), ("min_nano", "usd", " USD")):
            low, high = getattr(below, attr), getattr(level, attr)
            if high >= low:
                continue
            if (level.name, key) in given:
                reason = f"must be at least {below.name}'s {_shown(below, attr)}{unit}"
                where = level.name
            elif (below.name, key) in given:
                reason = f"must be at most {level.name}'s {_shown(level, attr)}{unit}"
                where = below.name
            else:
                continue
            shown = _shown(below if where == below.name else level, attr)
            problems.append((_key_path(path, where, key), f"{reason}, got {shown}{unit}"))
    return problems


def _key_path(path: str, level: str, key: str) -> str:
    if level == "low":
        return f"{path}.{'z' if key == 'z' else 'min_impact_usd'}"
    return f"{path}.severity.{level}.{key}"


def _shown(level: SeverityLevel, attr: str) -> str:
    if attr == "z":
        return f"{level.z:g}"
    return nano_to_usd_str(level.min_nano).rstrip("0").rstrip(".")
