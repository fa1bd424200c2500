"""What-if: a past period's recorded requests re-priced under a proposed config.

Each request of the archive (the cold tier, `archiveformat`) is routed as the proposed config
would route it, by the real code: a tier's rules (`routing.tiers.decide`, on what the event
recorded: team, project, environment, workload, tags, endpoint, prompt tokens, the request's
shape; no hint, no code, one message and no budget pressure, which the ledger does not keep),
else the model of that name; then priced with the compiled config's deployment prices
(`pricing.cost`) on the token counts it recorded. What cannot be re-routed keeps its recorded
cost: cache hits, imported and external costs, and requests for a model the proposed config
no longer serves (counted, so the reader sees them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from pathlib import Path

from gateway.config.model import Config, Deployment, ModelRoute
from gateway.history.sources import archive_events
from gateway.pricing.cost import cost_nano
from gateway.routing.tiers import RequestFeatures, decide
from gateway.types import Principal, SpendEvent, Usage


@dataclass(slots=True)
class Line:
    """One team's requests for one model (the name clients sent), now and as proposed."""

    team: str
    model: str
    requests: int = 0
    current_nano: int = 0
    proposed_nano: int = 0
    kept: int = 0  # events that keep their recorded cost (see the module's docstring)
    served: dict[str, int] = field(default_factory=dict)  # proposed model -> requests

    @property
    def difference_nano(self) -> int:
        return self.proposed_nano - self.current_nano


@dataclass(slots=True)
class Simulation:
    lines: list[Line]
    days_read: list[date]
    days_missing: list[date]  # no archive file of any team (not archived yet, or no spend)

    @property
    def current_nano(self) -> int:
        return sum(line.current_nano for line in self.lines)

    @property
    def proposed_nano(self) -> int:
        return sum(line.proposed_nano for line in self.lines)


def simulate(events: Iterable[SpendEvent], proposed: Config) -> list[Line]:
    """Lines per (team, requested model), sorted by team and model."""
    lines: dict[tuple[str, str], Line] = {}
    for e in events:
        model = e.requested_model or f"({e.kind})"
        line = lines.get((e.team, model))
        if line is None:
            line = lines[(e.team, model)] = Line(e.team, model)
        first = not (e.request_id and e.event_id.startswith(e.request_id + ":"))
        if first and e.kind != "external":
            line.requests += 1 if e.units is None else e.units
        line.current_nano += e.cost_nano
        priced = proposed_cost(e, proposed)
        if priced is None:
            line.kept += 1
            line.proposed_nano += e.cost_nano
            continue
        cost, served = priced
        line.proposed_nano += cost
        if first:
            line.served[served] = line.served.get(served, 0) + 1
    return [lines[k] for k in sorted(lines)]


def proposed_cost(e: SpendEvent, config: Config) -> tuple[int, str] | None:
    """(cost in nano-USD, the model that would serve it) under `config`, or None when the
    event keeps its recorded cost."""
    if e.kind != "request" or e.cache == "hit":
        return None
    usage = Usage(e.prompt_tokens, e.cached_prompt_tokens, e.completion_tokens, e.reasoning_tokens)
    if e.request_id and e.event_id.startswith(e.request_id + ":"):
        # A cascade's later call: the same deployment at its proposed price, if it is still there.
        for served in config.models.values():
            for d in served.deployments:
                if d.id == e.deployment:
                    return cost_nano(usage, d.price), served.name
        return None
    route = _route(e, config)
    if route is None:
        return None
    same = next((d for d in route.deployments if d.id == e.deployment), None)
    if same is not None:
        return cost_nano(usage, same.price), route.name
    return expected_cost(route, usage), route.name


def _route(e: SpendEvent, config: Config) -> ModelRoute | None:
    tier = config.tiers.get(e.requested_model)
    if tier is None:
        return config.models.get(e.requested_model)
    shape = e.shape or ""
    features = RequestFeatures(
        endpoint=e.endpoint or "chat/completions",
        prompt_tokens=e.prompt_tokens,
        hint=None,
        has_tools="tools" in shape,
        has_response_format="json" in shape,
        has_code=False,
        messages=1,
    )
    principal = Principal(
        key_id=e.key_id,
        team=e.team,
        project=e.project,
        environment=e.environment,
        workload=e.workload,
        tags=e.tags,
    )
    return config.models[decide(tier, features, principal).model]


def expected_cost(route: ModelRoute, usage: Usage) -> int:
    """What a request costs on a route when it is not pinned to a deployment: the weighted mean
    over a weighted route's deployments, the cheapest on a `cheapest` route, else the first
    (ordered, least-busy: the first is the one that serves when all is well)."""
    deployments: tuple[Deployment, ...] = route.deployments
    costs = [cost_nano(usage, d.price) for d in deployments]
    if route.strategy == "cheapest":
        return min(costs)
    if route.strategy != "weighted" or len(deployments) == 1:
        return costs[0]
    total = sum(d.weight for d in deployments)
    mean = sum((Fraction(c * d.weight, total) for c, d in zip(costs, deployments, strict=True)), 0)
    return int(mean + Fraction(1, 2))  # half up


def archived_events(
    archive_dir: Path, start: date, end: date
) -> tuple[list[SpendEvent], list[date], list[date]]:
    """The events dated `start` to `end` (inclusive, UTC) in every team's archive, and the days
    of the period that have a file and those that have none. A file is named by the day its
    events reached the stream, so the days either side are read too, for the events of one
    day that reached it after midnight."""
    events: list[SpendEvent] = []
    read: list[date] = []
    missing: list[date] = []
    first_ms = _epoch_ms(start)
    end_ms = _epoch_ms(end + timedelta(days=1))
    for i in range(-1, (end - start).days + 2):
        day = start + timedelta(days=i)
        paths = sorted(archive_dir.glob(f"*/{day.isoformat()}.jsonl.gz"))
        if start <= day <= end:
            (read if paths else missing).append(day)
        for path in paths:
            events += [e for e in archive_events(path).events if first_ms <= e.ts_ms < end_ms]
    return events, read, missing


def _epoch_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
