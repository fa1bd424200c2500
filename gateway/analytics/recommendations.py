"""Recommendations: what each team could change, with the evidence, the estimated monthly saving
and the config change (or action) that realizes it. Pure: daily rollups already read (the
ledger's and the recommendations' signal rollups, `rollupformat.SIGNAL_DIMENSIONS`), the
config, the budgets in force and the virtual keys.

Savings are priced on what was recorded: actual token counts at configured prices
(`pricing.cost`), actual costs of duplicate and batchable traffic. A saving over a calendar
month is that month's; over other periods it is scaled to 30 days.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction

from gateway.analytics.rollupdata import RollupData, Values, bucket_day, day_bucket, days
from gateway.config.model import BudgetConfig, Config
from gateway.pricing.cost import cost_nano
from gateway.pricing.price import Price
from gateway.rollupformat import (
    SHORT_COMPLETION_TOKENS,
    SHORT_PROMPT_TOKENS,
    SIGNAL_COUNT,
    SIGNAL_FINGERPRINT,
    SIGNAL_PREFIX,
    SIGNAL_ROUTE,
    split_parts,
)
from gateway.types import NANO_PER_USD, Usage, nano_to_usd_str

# What each kind recommends, in the order a report lists kinds of equal saving.
KINDS = (
    "tier_short_requests",
    "enable_cache",
    "prompt_caching",
    "batch_api",
    "stale_experiment",
    "idle_key",
    "no_budget",
    "no_alerts",
)
# The dimensions the recommendations read (daily), besides the signal rollups.
DIMENSIONS = ("team", "model", "workload", "tag", "key")

MOSTLY = Fraction(1, 2)  # "mostly short": more than half of a route's requests
MIN_REQUESTS = 20  # a route's requests (or sampled hashes) below which nothing is concluded
MIN_DUPLICATE_SHARE = Fraction(1, 10)  # duplicate / repeated-prefix shares worth acting on
MIN_TIER_SAVING_SHARE = Fraction(3, 10)  # a cheaper model must save 30 % of the short cost
PREFIX_TOKENS = 1024  # the tokens of a long prompt's fingerprinted prefix (4,096 characters)
BATCH_DISCOUNT = Fraction(1, 2)  # providers' batch APIs: half price
# Workloads (the `workload` attribution, or a `workload` tag) that nobody waits on.
NON_INTERACTIVE = frozenset({"batch", "batch-eval", "eval", "nightly", "offline", "backfill"})
# Keys spending NIGHT_SHARE of their cost in OFF_HOURS (UTC) on NIGHT_DAYS days: scheduled jobs.
OFF_HOURS = range(0, 6)
NIGHT_SHARE = Fraction(4, 5)
NIGHT_DAYS = 5
EXPERIMENT_TAGS = ("experiment", "exp")  # tag keys that name an experiment
QUIET_DAYS = 14  # an experiment without spend this long was over
IDLE_DAYS = 30  # a key without a request this long is idle
LOOKBACK_DAYS = 60  # history before the period read for quiet experiments and idle keys
_MONTH_DAYS = 30
_NANO, _MICRO, _CENT = Decimal("0.000000001"), Decimal("0.000001"), Decimal("0.01")


@dataclass(frozen=True, slots=True)
class KeySeen:
    """A virtual key as the recommendations need it (never its secret)."""

    key_id: str
    team: str
    name: str | None
    created: date | None  # None: declared in the config


@dataclass(frozen=True, slots=True)
class Recommendation:
    kind: str  # one of KINDS
    team: str  # "*": the whole organization
    subject: str  # the route (requested model), workload, tag or key it is about
    evidence: str  # the figures it rests on, in a sentence
    monthly_saving_nano: int  # estimated, per month (0: hygiene, no direct saving)
    change: str  # the config change (YAML) or the action that realizes it
    figures: Mapping[str, int | str] = field(default_factory=dict)

    @property
    def monthly_saving_usd(self) -> Decimal:
        return _decimal(self.monthly_saving_nano)

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "team": self.team,
            "subject": self.subject,
            "evidence": self.evidence,
            "monthly_saving_usd": nano_to_usd_str(self.monthly_saving_nano),
            "change": self.change,
            "figures": dict(self.figures),
        }


def recommendations(
    data: RollupData,
    config: Config,
    start: date,
    end: date,
    *,
    budgets: Sequence[BudgetConfig] = (),
    keys: Sequence[KeySeen] = (),
    whole_month: bool = False,
    hourly: RollupData | None = None,
) -> list[Recommendation]:
    """Every recommendation for the period `start`..`end` (inclusive), dearest saving first.

    `data`: daily rollups of DIMENSIONS and the signal dimensions, from LOOKBACK_DAYS before
    `start` to `end` (quiet experiments and idle keys look back; the rest reads the period).
    `budgets`: every budget in force (the config's and the admin's). `whole_month`: the
    period is one calendar month (its saving is not scaled). `hourly`: the period's hourly
    rollups of the `key` dimension, for steady night traffic (without: not looked for)."""
    period = [day_bucket(d) for d in days(start, end)]
    scale = Fraction(1) if whole_month else Fraction(_MONTH_DAYS, len(period))
    found: list[Recommendation] = []
    own, own_hourly = _by_team(data), _by_team(hourly) if hourly is not None else {}
    for team, mine in own.items():
        found += _tiers(mine, config, team, period, scale)
        found += _cache(mine, config, team, period, scale)
        found += _prompt_caching(mine, config, team, period, scale)
        found += _batch(mine, own_hourly.get(team), team, period, scale)
        found += _experiments(mine, team, start, end, scale)
    found += _idle_keys(own, keys, end)
    found += _governance(own, config, period, budgets)
    order = {kind: i for i, kind in enumerate(KINDS)}
    found.sort(key=lambda r: (-r.monthly_saving_nano, order[r.kind], r.team, r.subject))
    return found


def _by_team(data: RollupData) -> dict[str, RollupData]:
    """Each team's rollups on their own, so what reads one team's never walks the others'."""
    cells: dict[str, dict[tuple[str, str, str], Values]] = {}
    for ident, values in data.cells.items():
        cells.setdefault(ident[0], {})[ident] = values
    return {
        team: RollupData(data.granularity, data.start, data.end, mine)
        for team, mine in sorted(cells.items())
    }


def _monthly(nano: Fraction | int, scale: Fraction) -> int:
    """A period's amount as a month's, rounded half up to the nano-USD."""
    value = Fraction(nano) * scale
    return int((value + Fraction(1, 2)) // 1)


def _decimal(nano: int) -> Decimal:
    """Nano-USD as an exact USD amount with nine decimals."""
    return Decimal(nano).scaleb(-9).quantize(_NANO)


def _usd(nano: int) -> str:
    """An amount for a sentence: cents from a dollar up, else six decimals."""
    return str(_decimal(nano).quantize(_CENT if abs(nano) >= NANO_PER_USD else _MICRO))


def _pct(share: Fraction) -> str:
    return f"{float(share) * 100:.0f} %"


def _price(config: Config, model: str) -> Price | None:
    route = config.models.get(model)
    return route.deployments[0].price if route is not None else None


def _tiers(
    data: RollupData, config: Config, team: str, period: list[str], scale: Fraction
) -> list[Recommendation]:
    out = []
    for model, m in data.values(team, SIGNAL_ROUTE, period).items():
        requests, short = m.get("requests", 0), m.get("short", 0)
        if model in config.tiers or requests < MIN_REQUESTS or Fraction(short, requests) <= MOSTLY:
            continue
        usage = Usage(
            prompt_tokens=m.get("short_prompt", 0),
            cached_prompt_tokens=m.get("short_cached", 0),
            completion_tokens=m.get("short_completion", 0),
            reasoning_tokens=m.get("short_reasoning", 0),
        )
        spent = m.get("short_cost", 0)
        target = _cheaper_model(config, model, usage)
        if target is None:
            continue
        price = _price(config, target)
        assert price is not None
        would_cost = cost_nano(usage, price)
        saving = spent - would_cost
        if saving <= 0 or Fraction(saving, max(spent, 1)) < MIN_TIER_SAVING_SHARE:
            continue
        out.append(
            Recommendation(
                kind="tier_short_requests",
                team=team,
                subject=model,
                evidence=(
                    f"{short} of {requests} requests to {model} ({_pct(Fraction(short, requests))})"
                    f" are short and simple (at most {SHORT_PROMPT_TOKENS} prompt and"
                    f" {SHORT_COMPLETION_TOKENS} completion tokens, no tools, no JSON mode);"
                    f" their {usage.prompt_tokens} prompt and {usage.completion_tokens}"
                    f" completion tokens cost {_usd(spent)} USD on {model} and would cost"
                    f" {_usd(would_cost)} USD on {target}"
                ),
                monthly_saving_nano=_monthly(saving, scale),
                change=(
                    f"tiers:\n  {model}:\n    candidates: [{target}, {model}]\n"
                    f"    default: {model}\n    rules:\n      - name: short-simple\n"
                    f"        use: {target}\n        when: {{prompt_tokens_lte: "
                    f"{SHORT_PROMPT_TOKENS}, has_tools: false, has_response_format: false,"
                    f" team: [{team}]}}\n"
                ),
                figures={
                    "requests": requests,
                    "short_requests": short,
                    "short_prompt_tokens": usage.prompt_tokens,
                    "short_completion_tokens": usage.completion_tokens,
                    "short_cost_usd": nano_to_usd_str(spent),
                    "target_model": target,
                    "target_cost_usd": nano_to_usd_str(would_cost),
                },
            )
        )
    return out


def _cheaper_model(config: Config, model: str, usage: Usage) -> str | None:
    """The model a tier rule would send the short requests to: the cheapest candidate of a tier
    that lists `model`, else the configured model that prices them cheapest (embedding models
    aside), if it is cheaper per input and output token."""
    current = _price(config, model)
    if current is None:
        return None
    for tier in config.tiers.values():
        if model in tier.candidates and tier.candidates[0] != model:
            return tier.candidates[0]
    best: tuple[int, str] | None = None
    for name, route in config.models.items():
        p = route.deployments[0].price
        if name == model or "embed" in name or "embed" in route.deployments[0].model:
            continue
        if p.input_per_m >= current.input_per_m or p.output_per_m >= current.output_per_m:
            continue
        priced = (cost_nano(usage, p), name)
        best = priced if best is None or priced < best else best
    return best[1] if best else None


def _duplicates(
    data: RollupData, team: str, dimension: str, period: list[str]
) -> dict[str, tuple[int, int]]:
    """model -> (sampled hashes, distinct ones), distinct counted per day (the hashes are
    counted per day, which is also how long a cache entry can usefully live)."""
    out: dict[str, tuple[int, int]] = {}
    wanted = set(period)
    for (t, bucket, dim), values in data.cells.items():
        if t != team or dim != dimension or bucket not in wanted:
            continue
        # The hash (hex digits) is the value's last part: count per model part, unescaped once.
        counts: dict[str, list[int]] = {}
        for value, metrics in values.items():
            sums = counts.get(value[: value.rfind("|")])
            if sums is None:
                sums = counts[value[: value.rfind("|")]] = [0, 0]
            sums[0] += metrics.get(SIGNAL_COUNT, 0)
            sums[1] += 1
        for part, (seen, distinct) in counts.items():
            model = split_parts(part)[0]
            before = out.get(model, (0, 0))
            out[model] = (before[0] + seen, before[1] + distinct)
    return out


def _cache(
    data: RollupData, config: Config, team: str, period: list[str], scale: Fraction
) -> list[Recommendation]:
    out = []
    routes = data.values(team, SIGNAL_ROUTE, period)
    for model, (sampled, distinct) in _duplicates(data, team, SIGNAL_FINGERPRINT, period).items():
        m = routes.get(model, {})
        requests, hits = m.get("requests", 0), m.get("hits", 0)
        policy = config.cache.policy_for(model)
        if sampled < MIN_REQUESTS or (config.cache.enabled and policy.mode == "always"):
            continue
        share = Fraction(sampled - distinct, sampled)
        extra = share * requests - hits  # duplicates the cache does not answer yet
        misses = requests - hits
        if share < MIN_DUPLICATE_SHARE or extra <= 0 or misses <= 0:
            continue
        paid = 1 - Fraction(config.cache.hit_cost_fraction).limit_denominator(10**9)
        saving = extra * Fraction(m.get("miss_cost", 0), misses) * paid
        if saving <= 0:
            continue
        change = f"cache:\n  routes:\n    {model}: {{mode: always, ttl_s: 86400}}\n"
        if not config.cache.enabled:
            change = "cache:\n  enabled: true\n" + change.removeprefix("cache:\n")
        out.append(
            Recommendation(
                kind="enable_cache",
                team=team,
                subject=model,
                evidence=(
                    f"{_pct(share)} of the requests to {model} repeat an identical request of"
                    f" the same day ({sampled - distinct} of {sampled} sampled fingerprints);"
                    f" {hits} of {requests} requests were answered from the cache; the other"
                    f" {misses} cost {_usd(m.get('miss_cost', 0))} USD"
                ),
                monthly_saving_nano=_monthly(saving, scale),
                change=change,
                figures={
                    "requests": requests,
                    "cache_hits": hits,
                    "sampled_fingerprints": sampled,
                    "distinct_fingerprints": distinct,
                    "miss_cost_usd": nano_to_usd_str(m.get("miss_cost", 0)),
                },
            )
        )
    return out


def _prompt_caching(
    data: RollupData, config: Config, team: str, period: list[str], scale: Fraction
) -> list[Recommendation]:
    out = []
    routes = data.values(team, SIGNAL_ROUTE, period)
    for model, (sampled, distinct) in _duplicates(data, team, SIGNAL_PREFIX, period).items():
        price = _price(config, model)
        m = routes.get(model, {})
        long, cached = m.get("long", 0), m.get("long_cached", 0)
        if price is None or sampled < MIN_REQUESTS or price.cached_input_per_m >= price.input_per_m:
            continue
        share = Fraction(sampled - distinct, sampled)
        tokens = share * long * PREFIX_TOKENS - cached  # repeated prefix tokens not yet cached
        if share < MIN_DUPLICATE_SHARE or tokens <= 0:
            continue
        saving = tokens * (price.input_per_m - price.cached_input_per_m) / 1_000_000
        out.append(
            Recommendation(
                kind="prompt_caching",
                team=team,
                subject=model,
                evidence=(
                    f"{long} requests to {model} have prompts over {PREFIX_TOKENS} tokens;"
                    f" {_pct(share)} of them repeat a prefix of the same day ({sampled - distinct}"
                    f" of {sampled} sampled prefix fingerprints), but only {cached} prompt"
                    f" tokens were billed at the cached price"
                ),
                monthly_saving_nano=_monthly(saving, scale),
                change=(
                    "No gateway setting: keep the shared prefix (system prompt, instructions,"
                    " examples) first in the prompt and byte-identical across requests; OpenAI"
                    " then caches it by itself (a `prompt_cache_key` keeps such requests"
                    " together), Anthropic needs `cache_control` on it. The cached price is"
                    f" {price.cached_input_per_m / NANO_PER_USD:g} USD per 1M tokens instead of"
                    f" {price.input_per_m / NANO_PER_USD:g}."
                ),
                figures={
                    "long_requests": long,
                    "sampled_prefixes": sampled,
                    "distinct_prefixes": distinct,
                    "cached_prompt_tokens": cached,
                },
            )
        )
    return out


def _batch(
    data: RollupData,
    hourly: RollupData | None,
    team: str,
    period: list[str],
    scale: Fraction,
) -> list[Recommendation]:
    """Non-interactive workloads: by the `workload` attribution, else by a `workload` tag,
    else keys whose spend falls mostly in the night (OFF_HOURS, UTC) on several days."""
    found: list[tuple[str, str, int, int]] = []  # (subject, what, requests, cost)
    for workload, m in data.values(team, "workload", period).items():
        if workload.lower() in NON_INTERACTIVE:
            what = f"workload {workload}"
            found.append((workload, what, m.get("requests", 0), m.get("cost", 0)))
    if not found:
        for tag, m in data.values(team, "tag", period).items():
            name, _, value = tag.partition("=")
            if name == "workload" and value.lower() in NON_INTERACTIVE:
                found.append((tag, f"tag {tag}", m.get("requests", 0), m.get("cost", 0)))
    if not found and hourly is not None:
        found = _night_keys(hourly, team, set(period))
    out = []
    for subject, what, requests, cost in found:
        if cost <= 0:
            continue
        out.append(
            Recommendation(
                kind="batch_api",
                team=team,
                subject=subject,
                evidence=(
                    f"{requests} requests of {what}, which nobody waits on, cost"
                    f" {_usd(cost)} USD at interactive prices"
                ),
                monthly_saving_nano=_monthly(cost * BATCH_DISCOUNT, scale),
                change=(
                    f"No gateway setting: submit the jobs of {what} through the provider's batch"
                    " API (OpenAI and Azure OpenAI /v1/batches, Anthropic Message Batches,"
                    " Vertex and Bedrock batch inference), at half the price, with results"
                    " within 24 hours; spendgate does not proxy batch jobs."
                ),
                figures={"requests": requests, "cost_usd": nano_to_usd_str(cost)},
            )
        )
    return out


def _night_keys(hourly: RollupData, team: str, period: set[str]) -> list[tuple[str, str, int, int]]:
    """Keys that spent at least NIGHT_SHARE of their cost at night, on at least NIGHT_DAYS
    days of the period: a scheduled job, steady off-hours traffic. (key, what, requests,
    cost) of their night traffic."""
    night: dict[str, list[int]] = {}  # key -> [night requests, night cost, all cost]
    nights: dict[str, set[str]] = {}
    for (t, bucket, dim), values in hourly.cells.items():
        if t != team or dim != "key" or bucket[:8] not in period:
            continue
        dark = int(bucket[8:10]) in OFF_HOURS
        for key, m in values.items():
            sums = night.setdefault(key, [0, 0, 0])
            sums[2] += m.get("cost", 0)
            if dark and m.get("cost", 0) > 0:
                sums[0] += m.get("requests", 0)
                sums[1] += m.get("cost", 0)
                nights.setdefault(key, set()).add(bucket[:8])
    return [
        (
            key,
            f"key {key} at night ({OFF_HOURS.start:02d}-{OFF_HOURS.stop:02d} h UTC)",
            requests,
            cost,
        )
        for key, (requests, cost, total) in sorted(night.items())
        if total > 0
        and Fraction(cost, total) >= NIGHT_SHARE
        and len(nights.get(key, ())) >= NIGHT_DAYS
    ]


def _experiments(
    data: RollupData, team: str, start: date, end: date, scale: Fraction
) -> list[Recommendation]:
    """Experiment tags that spend again in the period after QUIET_DAYS without spend."""
    daily: dict[str, dict[date, int]] = {}
    for (t, bucket, dim), values in data.cells.items():
        if t != team or dim != "tag":
            continue
        for tag, metrics in values.items():
            name = tag.partition("=")[0]
            if name in EXPERIMENT_TAGS and metrics.get("cost", 0) > 0:
                daily.setdefault(tag, {})[bucket_day(bucket)] = metrics["cost"]
    out = []
    for tag, spend in sorted(daily.items()):
        spent_days = sorted(spend)
        resumed = None
        for before, after in itertools.pairwise(spent_days):
            if (after - before).days > QUIET_DAYS and start <= after <= end:
                resumed = after
        if resumed is None:
            continue
        since = sum(c for d, c in spend.items() if resumed <= d <= end)
        quiet_from = max(d for d in spent_days if d < resumed) + timedelta(days=1)
        out.append(
            Recommendation(
                kind="stale_experiment",
                team=team,
                subject=tag,
                evidence=(
                    f"tag {tag} spent nothing from {quiet_from} to"
                    f" {resumed - timedelta(days=1)}, then {_usd(since)} USD from {resumed}"
                    f" to {end}: a job or key left running after the experiment ended?"
                ),
                monthly_saving_nano=_monthly(since, scale),
                change=(
                    f"Revoke the keys that carry {tag} (`spendgate keys list --team {team}`,"
                    f" `spendgate keys revoke KEY_ID`), or cap it: budgets.rules: [{{name:"
                    f" {team}-{tag.replace('=', '-')}, team: {team}, scope: tag, match: {tag},"
                    " period: monthly, limit_usd: 1}]"
                ),
                figures={
                    "resumed": resumed.isoformat(),
                    "cost_since_usd": nano_to_usd_str(since),
                },
            )
        )
    return out


def _idle_keys(
    own: Mapping[str, RollupData], keys: Iterable[KeySeen], end: date
) -> list[Recommendation]:
    since = end - timedelta(days=IDLE_DAYS - 1)
    recent = [day_bucket(d) for d in days(since, end)]
    out = []
    for k in keys:
        if k.created is None or k.created > since:
            continue  # declared in the config (revoked by editing it), or too young to judge
        data = own.get(k.team)
        used = (
            data.values(k.team, "key", recent).get(k.key_id, {}).get("requests", 0) if data else 0
        )
        if used:
            continue
        out.append(
            Recommendation(
                kind="idle_key",
                team=k.team,
                subject=k.key_id,
                evidence=(
                    f"key {k.key_id}{f' ({k.name})' if k.name else ''}, created {k.created},"
                    f" made no request from {since} to {end}"
                ),
                monthly_saving_nano=0,
                change=f"spendgate keys revoke {k.key_id}",
                figures={"idle_days": IDLE_DAYS},
            )
        )
    return out


def _governance(
    own: Mapping[str, RollupData],
    config: Config,
    period: list[str],
    budgets: Sequence[BudgetConfig],
) -> list[Recommendation]:
    out = []
    budgeted = {b.team for b in budgets}
    spenders = []
    for team, data in own.items():
        cost = sum(m.get("cost", 0) for m in data.values(team, "team", period).values())
        if cost > 0:
            spenders.append(team)
        if cost <= 0 or team in budgeted:
            continue
        limit = Decimal(cost * 12 // 10).scaleb(-9).quantize(Decimal("1"))
        out.append(
            Recommendation(
                kind="no_budget",
                team=team,
                subject=team,
                evidence=f"{team} spent {_usd(cost)} USD in the period with no budget of any scope",
                monthly_saving_nano=0,
                change=(
                    f"teams:\n  {team}:\n    budgets:\n      - {{name: {team}-monthly, period:"
                    f" monthly, limit_usd: {max(limit, Decimal(1))}, on_exceed: alert}}\n"
                ),
                figures={"cost_usd": nano_to_usd_str(cost)},
            )
        )
    listened = any("budget_threshold" in w.events for w in config.alerts.webhooks)
    if budgets and spenders and not listened:
        out.append(
            Recommendation(
                kind="no_alerts",
                team="*",
                subject="alerts.webhooks",
                evidence=(
                    f"{len(budgets)} budgets cross their alert thresholds with no webhook to"
                    " tell anyone (no `alerts.webhooks` entry receives budget_threshold)"
                ),
                monthly_saving_nano=0,
                change=(
                    "alerts:\n  webhooks:\n    - {name: finops, url: ${FINOPS_WEBHOOK_URL},"
                    " events: [budget_threshold, budget_exceeded, budget_forecast, anomaly]}\n"
                ),
                figures={"budgets": len(budgets)},
            )
        )
    return out
