"""The admin API for FinOps: reports under /admin/reports/ and external costs at /admin/costs.

    GET  /admin/reports/showback?start=YYYY-MM-DD&end=YYYY-MM-DD&format=json|csv|table
         (default: the current month so far)
    GET  /admin/reports/tagging?start=YYYY-MM-DD&end=YYYY-MM-DD&format=...  (as showback)
    GET  /admin/reports/chargeback?period=YYYY-MM&format=json|csv|table  (default: this month)
    GET  /admin/reports/focus?period=YYYY-MM&format=csv|json              (FOCUS 1.x rows)
    GET  /admin/reports/scorecard?period=YYYY-MM&format=json|csv|table   (default: this month)
    GET  /admin/reports/review?week=YYYY-Www&format=json|csv|table  (default: the last whole week)
    GET  /admin/reports/maturity?format=json|csv|table   (crawl / walk / run, last 30 days)
    GET  /admin/forecast?team=T&days=N&format=json|csv|table   (spend and budget forecasts)
    GET  /admin/reports/recommendations?period=YYYY-MM|start=&end=&team=T&format=json|csv|table
         (default: the last 30 days)
    POST /admin/costs  (`CostSpec`)

A POST is idempotent by `id` (per team): a retry answers 200 with `"duplicate": true` and adds
nothing; the first post answers 201. A posted cost carries its FOCUS classification (charge
category, service category, subcategory and name), checked against FOCUS 1.2's values;
docs/ledger.md has the rules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import get_args

from aiohttp import web
from redis.exceptions import RedisError

from gateway import rediskeys
from gateway.analytics.focus import own_services
from gateway.analytics.taxonomy import (
    CHARGE_CATEGORIES,
    GATEWAY_SERVICE_CATEGORY,
    SERVICE_SUBCATEGORIES,
    ChargeClass,
    default_subcategory,
)
from gateway.app.admin import Endpoint, Param, Reply, json_response
from gateway.app.state import BUDGETS, CLOCK, FORECASTER, KEYRING, LEDGER, LIVE_CONFIG, REDIS
from gateway.config.checks import Instant, JsonSchema, OneOf, Problem, Spec, Str, Usd, checks
from gateway.config.model import Config
from gateway.config.schema import LABEL, TAGS
from gateway.errors import InvalidRequest, NotFound, ServiceUnavailable
from gateway.reports.build import Period, Report, build_report
from gateway.reports.external_costs import (
    ExternalCost,
    IdempotencyConflict,
    ServiceConflict,
    post_external_cost,
)
from gateway.reports.forecast import MAX_DAYS as MAX_FORECAST_DAYS
from gateway.reports.forecast import UnknownTeam, forecast_report
from gateway.reports.kinds import ReportKind
from gateway.reports.maturity import maturity_report
from gateway.reports.recommendations import default_period, recommendations_report
from gateway.reports.render import CONTENT_TYPES, Format, render
from gateway.reports.review import review_report
from gateway.reports.scorecard import scorecard_report
from gateway.types import nano_to_usd_str

_FUTURE_SLACK_S = 86_400  # a cost may be dated at most a day ahead (clock skew, time zones)


@dataclass(frozen=True, kw_only=True)
class CostSpec(Spec):
    """A cost spendgate did not see go by (a training run, an invoice line), for the ledger."""

    id: str = field(
        metadata=checks(
            Str(
                pattern=r"[A-Za-z0-9_.:-]{1,128}",
                rule="an idempotency id is 1-128 letters, digits or _ . : -",
            ),
            doc="Your idempotency id: a retry with the same id and content adds nothing.",
        )
    )
    team: str = field(metadata=checks(Str(), doc="A team of the config."))
    amount_usd: int = field(  # nano-USD
        metadata=checks(
            Usd(signed=True, max_usd=10**9),
            doc="The cost in USD, signed as on a bill: negative for a Credit, non-zero for an "
            "Adjustment, positive for any other charge category.",
        )
    )
    description: str = field(
        metadata=checks(
            Str(max_len=500, pattern=r"[\s\S]*\S[\s\S]*", rule="must not be blank"),
            doc="What the cost is.",
        )
    )
    project: str | None = field(default=None, metadata=checks(LABEL, doc="Allocation."))
    environment: str | None = field(default=None, metadata=checks(LABEL, doc="Allocation."))
    workload: str | None = field(default=None, metadata=checks(LABEL, doc="Allocation."))
    provider: str | None = field(default=None, metadata=checks(LABEL, doc="Who charged it."))
    tags: dict[str, str] = field(
        default_factory=dict, metadata=checks(TAGS, doc="Free-form allocation tags.")
    )
    ts: int | None = field(  # epoch ms
        default=None,
        metadata=checks(
            Instant(),
            doc="When it was incurred: within the last 400 days, at most a day ahead "
            "(default: now).",
        ),
    )
    charge_category: str = field(
        default="Usage",
        metadata=checks(OneOf(*CHARGE_CATEGORIES), doc="Its FOCUS ChargeCategory."),
    )
    service_category: str = field(
        default=GATEWAY_SERVICE_CATEGORY,
        metadata=checks(OneOf(*SERVICE_SUBCATEGORIES), doc="Its FOCUS ServiceCategory."),
    )
    service_subcategory: str | None = field(
        default=None,
        metadata=checks(
            OneOf(*(s for subs in SERVICE_SUBCATEGORIES.values() for s in subs)),
            doc="Its FOCUS ServiceSubcategory, one of its category's (default: Generative AI "
            "for AI and Machine Learning, else 'Other (<category>)').",
        ),
    )
    service_name: str | None = field(
        default=None,
        metadata=checks(
            LABEL,
            doc="The service billed; a service keeps the category it was first posted with "
            "(default: the provider's name).",
        ),
    )

    def problems(self) -> Iterator[Problem]:
        category, amount = self.charge_category, self.amount_usd
        if self.charge_class().problems():
            subcategories = ", ".join(SERVICE_SUBCATEGORIES[self.service_category])
            reason = f"must be a subcategory of {self.service_category!r}: {subcategories}"
            yield "service_subcategory", reason
        if category == "Credit" and amount >= 0:
            yield "amount_usd", "must be negative for a Credit (it reduces the charge)"
        elif category == "Adjustment" and amount == 0:
            yield "amount_usd", "must not be 0 for an Adjustment"
        elif category not in ("Credit", "Adjustment") and amount <= 0:
            yield "amount_usd", f"must be greater than 0 for a {category} (a refund is a Credit)"

    def charge_class(self) -> ChargeClass:
        return ChargeClass(
            self.charge_category,
            self.service_category,
            self.service_subcategory or default_subcategory(self.service_category),
            self.service_name,
        )


async def showback_report(request: web.Request, _: None) -> web.Response:
    period = _day_range(request)
    return await _report(request, "showback", period, report_format(request.query, "json"))


async def tagging_report(request: web.Request, _: None) -> web.Response:
    period = _day_range(request)
    return await _report(request, "tagging", period, report_format(request.query, "json"))


def _day_range(request: web.Request) -> Period:
    """start..end (both or neither), else the current month so far."""
    query = request.query
    if "start" in query or "end" in query:
        if "start" not in query or "end" not in query:
            raise InvalidRequest("give both 'start' and 'end' (YYYY-MM-DD)", param="start")
        return _invalid(lambda: Period.of_days(query["start"], query["end"]), "start")
    return Period.month_to_date(_now(request))


async def chargeback_report(request: web.Request, _: None) -> web.Response:
    query = request.query
    return await _report(
        request, "chargeback", _month(request, query), report_format(query, "json")
    )


async def focus_report(request: web.Request, _: None) -> web.Response:
    query = request.query
    return await _report(request, "focus", _month(request, query), report_format(query, "csv"))


async def forecast(request: web.Request, _: None) -> web.Response:
    query = request.query
    report = await forecast_of(request, query.get("team"), _days(query.get("days", "30")))
    return rendered(report, report_format(query, "json"))


async def forecast_of(request: web.Request, team: str | None, days: int) -> Report:
    """The forecast report as of the gateway's clock (also the team API's forecast)."""
    app = request.app
    try:
        return await forecast_report(
            app[LIVE_CONFIG].current,
            app[REDIS],
            app[BUDGETS],
            app[LEDGER],
            app[FORECASTER],
            app[CLOCK](),
            team=team,
            days=days,
        )
    except UnknownTeam as exc:
        raise NotFound(str(exc), code="team_not_found") from None
    except (RedisError, OSError) as exc:
        raise ServiceUnavailable("the store is unreachable; try again shortly") from exc


async def scorecard(request: web.Request, _: None) -> web.Response:
    query = request.query
    report = await scorecard_of(request, _month(request, query))
    return rendered(report, report_format(query, "json"))


async def scorecard_of(request: web.Request, period: Period) -> Report:
    """The scorecard of `period`'s month (also what the team API takes a team's card from)."""
    app = request.app
    try:
        return await scorecard_report(
            app[LIVE_CONFIG].current,
            app[REDIS],
            app[BUDGETS],
            app[LEDGER],
            app[FORECASTER],
            period,
            app[CLOCK](),
        )
    except (RedisError, OSError) as exc:
        raise ServiceUnavailable("the store is unreachable; try again shortly") from exc


def asked_month(request: web.Request) -> Period:
    """`period` (YYYY-MM) of the query; default: the current month."""
    return _month(request, request.query)


async def review(request: web.Request, _: None) -> web.Response:
    query = request.query
    app = request.app
    try:
        report = await review_report(
            app[LIVE_CONFIG].current, app[REDIS], app[BUDGETS], query.get("week"), app[CLOCK]()
        )
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="week") from None
    except (RedisError, OSError) as exc:
        raise ServiceUnavailable("the store is unreachable; try again shortly") from exc
    return rendered(report, report_format(query, "json"))


async def maturity(request: web.Request, _: None) -> web.Response:
    app = request.app
    try:
        report = await maturity_report(
            app[LIVE_CONFIG].current, app[REDIS], app[BUDGETS], app[FORECASTER], app[CLOCK]()
        )
    except (RedisError, OSError) as exc:
        raise ServiceUnavailable("the store is unreachable; try again shortly") from exc
    return rendered(report, report_format(request.query, "json"))


async def recommendations(request: web.Request, _: None) -> web.Response:
    query = request.query
    if "start" in query or "end" in query:
        if "start" not in query or "end" not in query or "period" in query:
            raise InvalidRequest("give 'period', or both 'start' and 'end'", param="start")
        period = _invalid(lambda: Period.of_days(query["start"], query["end"]), "start")
    elif "period" in query:
        period = _month(request, query)
    else:
        period = default_period(_now(request))
    fmt = report_format(query, "json")
    report = await recommendations_of(request, period, query.get("team"))
    return rendered(report, fmt)


async def recommendations_of(request: web.Request, period: Period, team: str | None) -> Report:
    """The recommendations of `period` (of every team, or `team`'s); also the dashboard's."""
    app = request.app
    try:
        keys = await app[KEYRING].list()
        return await recommendations_report(
            app[LIVE_CONFIG].current, app[REDIS], period, app[BUDGETS].all(), keys, team=team
        )
    except (RedisError, OSError) as exc:
        raise ServiceUnavailable("the store is unreachable; try again shortly") from exc


async def post_cost(request: web.Request, body: CostSpec) -> web.Response:
    now = request.app[CLOCK]()
    cost = _external_cost(body, request.app[LIVE_CONFIG].current, now)
    try:
        posted = await post_external_cost(request.app[REDIS], cost, int(now * 1000))
    except IdempotencyConflict as exc:
        raise InvalidRequest(str(exc), param="id", code="idempotency_key_reused") from None
    except ServiceConflict as exc:
        raise InvalidRequest(
            str(exc), param="service_category", code="service_category_conflict"
        ) from None
    event = posted.event
    payload = {
        "id": cost.id,
        "event_id": event.event_id,
        "team": event.team,
        "amount_usd": nano_to_usd_str(event.cost_nano),
        "ts": datetime.fromtimestamp(event.ts_ms / 1000, UTC).isoformat().replace("+00:00", "Z"),
        "duplicate": posted.duplicate,
    }
    return json_response(payload, status=200 if posted.duplicate else 201)


async def _report(
    request: web.Request, kind: ReportKind, period: Period, fmt: Format
) -> web.Response:
    config = request.app[LIVE_CONFIG].current
    return rendered(await build_report(kind, config, request.app[REDIS], period), fmt)


def rendered(report: Report, fmt: Format) -> web.Response:
    headers = {}
    if fmt == "csv":
        name = f"spendgate-{report.kind}-{report.period.label.replace('..', '_')}.csv"
        headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return web.Response(
        text=render(report, fmt),
        content_type=CONTENT_TYPES[fmt],
        charset="utf-8",
        headers=headers,
    )


def report_format(query: Mapping[str, str], default: Format) -> Format:
    value = query.get("format", default)
    if value not in get_args(Format):
        raise InvalidRequest("'format' must be one of json, csv, table", param="format")
    return value  # type: ignore[return-value]  # checked against the Literal just above


def _days(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_FORECAST_DAYS:
        raise InvalidRequest(
            f"'days' must be a whole number from 1 to {MAX_FORECAST_DAYS}, not {text!r}",
            param="days",
        )
    return int(text)


def _now(request: web.Request) -> datetime:
    return datetime.fromtimestamp(request.app[CLOCK](), UTC)


def _month(request: web.Request, query: Mapping[str, str]) -> Period:
    if "period" not in query:
        return Period.current_month(_now(request))
    return _invalid(lambda: Period.of_month(query["period"]), "period")


def _invalid(build: Callable[[], Period], param: str) -> Period:
    try:
        return build()
    except ValueError as exc:
        raise InvalidRequest(str(exc), param=param) from None


def _external_cost(body: CostSpec, config: Config, now: float) -> ExternalCost:
    teams = config.teams
    if body.team not in teams:
        known = ", ".join(sorted(teams)) or "none"
        raise InvalidRequest(
            f"team: unknown team {body.team!r}: teams in the config are {known}",
            param="team",
            code="unknown_team",
        )
    # Older than the daily rollups are kept, it would never show in a report.
    oldest, latest = now - rediskeys.ROLLUP_DAILY_TTL_S, now + _FUTURE_SLACK_S
    if body.ts is not None and not oldest < body.ts / 1000 < latest:
        raise InvalidRequest(
            "ts: must lie within the last 400 days and at most a day ahead", param="ts"
        )
    cost = ExternalCost(
        id=body.id,
        team=body.team,
        amount_nano=body.amount_usd,
        description=body.description,
        ts_ms=body.ts,
        project=body.project,
        environment=body.environment,
        workload=body.workload,
        provider=body.provider,
        tags=body.tags,
        charge=body.charge_class(),
    )
    # FOCUS gives a service one category: the services of spendgate's own rows keep theirs.
    own = own_services(config).get(cost.service_name)
    if own is not None and own != (cost.charge.service_category, cost.charge.service_subcategory):
        raise InvalidRequest(
            f"service_name: {cost.service_name!r} is a service spendgate's FOCUS export uses "
            f"itself, as {own[0]!r} / {own[1]!r}: post it so, or name this cost's service "
            "differently",
            param="service_name" if body.service_name else "provider",
            code="service_category_conflict",
        )
    return cost


_FORMATS = {
    "json": {"type": "object", "description": "the report as JSON"},
    "csv": {"type": "string", "description": "one row per line, with a header row"},
    "table": {"type": "string", "description": "aligned columns for a terminal"},
}


def _report_replies(formats: tuple[Format, ...], what: str) -> tuple[Reply, ...]:
    media = {CONTENT_TYPES[f]: _FORMATS[f] for f in formats}
    return (Reply(200, f"{what}, in the format asked for.", media=media),)


def format_param(default: Format) -> Param:
    return Param(
        "format",
        f"Output format (default: {default}).",
        {"enum": list(get_args(Format)), "default": default},
    )


MONTH_PARAM = Param(
    "period",
    "A calendar month (UTC) as YYYY-MM (default: the current month).",
    {"type": "string", "pattern": r"^\d{4}-\d{2}$"},
)
_DAY: JsonSchema = {"type": "string", "format": "date"}
_POSTED: JsonSchema = {
    "type": "object",
    "required": ["id", "event_id", "team", "amount_usd", "ts", "duplicate"],
    "properties": {
        "id": {"type": "string"},
        "event_id": {"type": "string"},
        "team": {"type": "string"},
        "amount_usd": {"type": "string", "description": "exact USD"},
        "ts": {"type": "string", "format": "date-time"},
        "duplicate": {
            "type": "boolean",
            "description": "true: posted before with this id; nothing was added",
        },
    },
}


def report_endpoints() -> tuple[Endpoint, ...]:
    return (
        Endpoint(
            "GET",
            "/admin/reports/showback",
            showback_report,
            "Showback: cost by team, project, environment, workload, model and tag",
            "reports",
            _report_replies(get_args(Format), "The showback report"),
            description="Days are UTC; give both start and end, or neither (the current month "
            "so far).",
            query=(
                Param("start", "First day (YYYY-MM-DD).", _DAY),
                Param("end", "Last day, inclusive (YYYY-MM-DD).", _DAY),
                format_param("json"),
            ),
            access="reporting",
        ),
        Endpoint(
            "GET",
            "/admin/reports/tagging",
            tagging_report,
            "Tagging compliance: the share of each team's spend that is fully tagged",
            "reports",
            _report_replies(get_args(Format), "The tagging compliance report"),
            description="Fully tagged: the charge names every tag the `policies.tags` rules "
            "governing it require (see docs/governance.md); per team, the spend lacking each "
            "tag. Days are UTC; give both start and end, or neither (the current month so far).",
            query=(
                Param("start", "First day (YYYY-MM-DD).", _DAY),
                Param("end", "Last day, inclusive (YYYY-MM-DD).", _DAY),
                format_param("json"),
            ),
            access="reporting",
        ),
        Endpoint(
            "GET",
            "/admin/reports/chargeback",
            chargeback_report,
            "Chargeback: one month's statement per team, shared costs allocated",
            "reports",
            _report_replies(get_args(Format), "The chargeback statement"),
            query=(MONTH_PARAM, format_param("json")),
            access="reporting",
        ),
        Endpoint(
            "GET",
            "/admin/reports/focus",
            focus_report,
            "FOCUS export of one month",
            "reports",
            _report_replies(get_args(Format), "FOCUS rows"),
            description="FinOps Open Cost and Usage Specification columns (see docs/ledger.md).",
            query=(MONTH_PARAM, format_param("csv")),
            access="reporting",
        ),
        Endpoint(
            "GET",
            "/admin/forecast",
            forecast,
            "Spend and budget forecasts, with their backtested accuracy",
            "reports",
            _report_replies(get_args(Format), "The forecast"),
            description="Per team and in total: the month's expected spend and the next `days` "
            "days, with 80 % and 95 % prediction intervals; per budget: the expected spend at "
            "the end of its period and when it runs out at the forecast rate; each with the "
            "model and its backtest (MAPE, interval coverage). See docs/forecasts.md.",
            query=(
                Param("team", "Only this team (default: every team, and the total)."),
                Param(
                    "days",
                    "Daily forecasts from today (default: 30).",
                    {"type": "integer", "minimum": 1, "maximum": MAX_FORECAST_DAYS, "default": 30},
                ),
                format_param("json"),
            ),
            errors=(404, 503),
            access="reporting",
        ),
        Endpoint(
            "GET",
            "/admin/reports/scorecard",
            scorecard,
            "Scorecard: each team's month, against its budgets, forecasts and last month",
            "reports",
            _report_replies(get_args(Format), "The scorecard"),
            description="Per team: budget adherence (spent against each budget, periods at "
            "their limit, requests blocked or downgraded), the share of spend allocated to a "
            "project, tagging compliance, the optimization score, cost per request, per 1k "
            "tokens and per business "
            "unit, month-over-month change and its drivers, the forecast of the last whole "
            "month against its actual, and anomalies opened and confirmed. See "
            "docs/scorecards.md.",
            query=(MONTH_PARAM, format_param("json")),
            errors=(503,),
            access="reporting",
        ),
        Endpoint(
            "GET",
            "/admin/reports/review",
            review,
            "Weekly review: each team's week against the week before, budgets, anomalies",
            "reports",
            _report_replies(get_args(Format), "The weekly review"),
            description="Per team: the ISO week's spend against the week before, how much of "
            "each budget's limit was used by the week's end, anomalies opened and confirmed in "
            "the week, and the top recommendations. What the scheduled digest posts (alerts."
            "review). See docs/scorecards.md.",
            query=(
                Param(
                    "week",
                    "An ISO week as YYYY-Www (default: the last complete week).",
                    {"type": "string", "pattern": r"^\d{4}-W\d{2}$"},
                ),
                format_param("json"),
            ),
            errors=(503,),
            access="reporting",
        ),
        Endpoint(
            "GET",
            "/admin/reports/maturity",
            maturity,
            "FinOps maturity (crawl / walk / run) of the organization and each team",
            "reports",
            _report_replies(get_args(Format), "The maturity assessment"),
            description="From measured signals over the last 30 complete days: spend "
            "allocated and tagged, budgets and whether they enforce, alert webhooks, optimizer "
            "savings, anomalies given feedback, forecast accuracy, review cadence, unit "
            "economics; each criterion with its evidence, and what is missing for the next "
            "level. See docs/scorecards.md.",
            query=(format_param("json"),),
            errors=(503,),
            access="reporting",
        ),
        Endpoint(
            "GET",
            "/admin/reports/recommendations",
            recommendations,
            "Recommendations with estimated monthly savings",
            "reports",
            _report_replies(get_args(Format), "The recommendations, dearest saving first"),
            description="Per team: short simple requests on an expensive model (a tier rule), "
            "duplicate requests (the cache), repeated long prompt prefixes (provider prompt "
            "caching), non-interactive workloads (a batch API), experiments spending again, "
            "idle keys, teams without budgets or alerts; each with its evidence, estimated "
            "monthly saving and the change that realizes it. Days are UTC: give `period`, or "
            "`start` and `end`, or neither (the last 30 days). See docs/recommendations.md.",
            query=(
                MONTH_PARAM,
                Param("start", "First day (YYYY-MM-DD).", _DAY),
                Param("end", "Last day, inclusive (YYYY-MM-DD).", _DAY),
                Param("team", "Only this team's recommendations (default: every team)."),
                format_param("json"),
            ),
            errors=(503,),
            access="reporting",
        ),
        Endpoint(
            "POST",
            "/admin/costs",
            post_cost,
            "Post an external cost to the ledger",
            "costs",
            (
                Reply(201, "Posted.", _POSTED),
                Reply(200, "Posted before with this id and content: nothing added.", _POSTED),
            ),
            description="The same id with other content is refused (400 "
            "`idempotency_key_reused`), and so is a service name posted before with another "
            "service category or subcategory (400 `service_category_conflict`): FOCUS gives a "
            "service one category.",
            body=CostSpec,
        ),
    )


def admin_report_routes() -> list[web.RouteDef]:
    return [endpoint.route() for endpoint in report_endpoints()]
