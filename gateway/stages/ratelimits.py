"""Rate limits as a stage: before the cache and the budgets, each request takes one request
against every rate limit that applies to it (per key, team or model), or gets a 429 in OpenAI's
shape; every answer carries OpenAI's `x-ratelimit-*` headers for the tightest limit of each
kind; after the response its tokens are counted against the token limits."""

from __future__ import annotations

import math

from aiohttp import web

from gateway.config.model import Config, RateLimitRule
from gateway.errors import RateLimitReached
from gateway.ratelimits.limiter import Limit, RateLimiter, Slice
from gateway.stages.base import Context, Services, Stage
from gateway.types import Principal

_WHAT = {"requests": "requests per minute (RPM)", "tokens": "tokens per minute (TPM)"}


class RateLimits(Stage):
    name = "rate_limits"

    def __init__(self, services: Services) -> None:
        super().__init__(services)
        config, _ = services.snapshot()
        self.limiter = RateLimiter(services.store, services.clock, config.rate_limits.local_share)

    def swap(self, config: Config) -> None:
        self.limiter.local_share = config.rate_limits.local_share

    async def aclose(self) -> None:
        await self.limiter.aclose()

    async def before(self, ctx: Context) -> web.StreamResponse | None:
        rules, record = ctx.config.rate_limits.rules, ctx.record
        if not rules:
            return None
        assert record.principal is not None and record.model is not None
        limits = applicable(rules, record.principal, record.model)
        if not limits:
            return None
        slices, over = await self.limiter.admit(limits)
        wait_s = self.limiter.window_end() - self.services.clock()
        ctx.headers.update(headers(limits, slices, wait_s))
        if over is None:
            ctx.notes[self.name] = limits
            return None
        record.rate_limited = f"{over.rule}:{over.kind}"
        metrics = self.services.metrics
        metrics.child(metrics.rate_limited, over.per, over.kind).inc()
        retry = max(1, math.ceil(wait_s))
        raise RateLimitReached(
            f"Rate limit reached on {_WHAT[over.kind]} for {over.per} {over.subject!r} "
            f"(rule {over.rule!r}): limit {over.limit} a minute. Please try again in {retry}s.",
            over.kind,
            headers={"Retry-After": str(retry)},
        )

    def after(self, ctx: Context) -> None:
        limits = ctx.notes.get(self.name)
        if isinstance(limits, list):
            self.limiter.consume(limits, ctx.record.tokens)


def applicable(rules: tuple[RateLimitRule, ...], principal: Principal, model: str) -> list[Limit]:
    """The limits of every rule that applies to a request of `principal` for `model`."""
    limits: list[Limit] = []
    for rule in rules:
        if (rule.teams and principal.team not in rule.teams) or (
            rule.models and model not in rule.models
        ):
            continue
        subject = (
            principal.key_id
            if rule.per == "key"
            else principal.team
            if rule.per == "team"
            else model
        )
        if rule.requests is not None:
            limits.append(Limit(rule.name, rule.per, subject, "requests", rule.requests))
        if rule.tokens is not None:
            limits.append(Limit(rule.name, rule.per, subject, "tokens", rule.tokens))
    return limits


def headers(limits: list[Limit], slices: list[Slice], wait_s: float) -> dict[str, str]:
    """OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, for the limit of each
    kind with the least left."""
    tightest: dict[str, Slice] = {}
    for limit, s in zip(limits, slices, strict=True):
        held = tightest.get(limit.kind)
        if held is None or s.remaining < held.remaining:
            tightest[limit.kind] = s
    reset = reset_text(wait_s)
    out: dict[str, str] = {}
    for kind, s in tightest.items():
        out[f"x-ratelimit-limit-{kind}"] = str(s.limit)
        out[f"x-ratelimit-remaining-{kind}"] = str(s.remaining)
        out[f"x-ratelimit-reset-{kind}"] = reset
    return out


def reset_text(seconds: float) -> str:
    """A wait as OpenAI writes it: `340ms`, `12.5s`, `1m0s`."""
    ms = max(0, math.ceil(seconds * 1000))
    if ms < 1000:
        return f"{ms}ms"
    if ms >= 60_000:
        return f"{ms // 60_000}m{(ms % 60_000) / 1000:g}s"
    return f"{ms / 1000:g}s"
