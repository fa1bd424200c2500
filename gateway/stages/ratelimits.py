"""Rate limits as a stage: before the cache and the budgets, each request takes one request
against every rate limit that applies to it (per key, team or model), or gets a 429 in OpenAI's
shape; every answer carries OpenAI's `x-ratelimit-*` headers for the tightest limit of each
kind; after the response its tokens are counted against the token limits."""

from __future__ import annotations

import math
from collections.abc import Sequence

from aiohttp import web

from gateway.config.model import Config, RateLimitRule
from gateway.errors import RateLimitReached
from gateway.ratelimits.limiter import Limit, RateLimiter, Slice
from gateway.stages.base import Context, Services, Stage
from gateway.types import Principal

_MAX_KNOWN = 10_000  # (key, team, model) lists of limits kept; more are forgotten at once
_WHAT = {"requests": "requests per minute (RPM)", "tokens": "tokens per minute (TPM)"}


class RateLimits(Stage):
    name = "rate_limits"

    def __init__(self, services: Services) -> None:
        super().__init__(services)
        config, _ = services.snapshot()
        self.limiter = RateLimiter(services.store, services.clock, config.rate_limits.local_share)
        # (key id, team, model) -> the limits of this config's rules, one list each, so the
        # limiter finds their slices by the list (rebuilt after a reload).
        self._limits: dict[tuple[str, str, str], tuple[Limit, ...]] = {}
        self._rules: tuple[RateLimitRule, ...] = config.rate_limits.rules

    def swap(self, config: Config) -> None:
        self.limiter.local_share = config.rate_limits.local_share
        self._limits, self._rules = {}, config.rate_limits.rules

    async def aclose(self) -> None:
        await self.limiter.aclose()

    async def before(self, ctx: Context) -> web.StreamResponse | None:
        rules, record = ctx.config.rate_limits.rules, ctx.record
        if not rules:
            return None
        p, model = record.principal, record.model
        assert p is not None and model is not None
        limits = self._limits.get((p.key_id, p.team, model))
        if limits is None or rules is not self._rules:
            limits = self._applicable(rules, p, model)
        if not limits:
            return None
        over, now = None, self.limiter.now()
        slices = self.limiter.try_admit(limits, now)
        if slices is None:
            slices, over = await self.limiter.admit(limits)
            now = self.limiter.now()
        wait_s = self.limiter.reset_in(now)
        headers(limits, slices, wait_s, ctx.headers)
        if over is None:
            ctx.notes[self.name] = (limits, slices)
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

    def _applicable(
        self, rules: tuple[RateLimitRule, ...], p: Principal, model: str
    ) -> tuple[Limit, ...]:
        if rules is not self._rules:  # a request that began before a reload
            return tuple(applicable(rules, p, model))
        if len(self._limits) >= _MAX_KNOWN:
            self._limits.clear()
        found = self._limits[(p.key_id, p.team, model)] = tuple(applicable(rules, p, model))
        return found

    def after(self, ctx: Context) -> None:
        admitted = ctx.notes.get(self.name)
        if isinstance(admitted, tuple):
            limits, slices = admitted
            self.limiter.consume(limits, slices, ctx.record.tokens)


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


def headers(
    limits: Sequence[Limit], slices: list[Slice], wait_s: float, out: dict[str, str]
) -> None:
    """OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` into `out`, for the
    limit of each kind with the least left."""
    requests = tokens = None
    requests_left = tokens_left = 0
    for limit, s in zip(limits, slices, strict=True):
        left = s.limit - s.shared + s.claimed - s.used  # Slice.remaining, inlined
        if left < 0:
            left = 0
        if limit.kind == "requests":
            if requests is None or left < requests_left:
                requests, requests_left = s, left
        elif tokens is None or left < tokens_left:
            tokens, tokens_left = s, left
    reset = reset_text(wait_s)
    if requests is not None:
        out["x-ratelimit-limit-requests"] = str(requests.limit)
        out["x-ratelimit-remaining-requests"] = str(requests_left)
        out["x-ratelimit-reset-requests"] = reset
    if tokens is not None:
        out["x-ratelimit-limit-tokens"] = str(tokens.limit)
        out["x-ratelimit-remaining-tokens"] = str(tokens_left)
        out["x-ratelimit-reset-tokens"] = reset


def reset_text(seconds: float) -> str:
    """A wait as OpenAI writes it: `340ms`, `12.5s`, `1m0s`."""
    ms = max(0, math.ceil(seconds * 1000))
    if ms < 1000:
        return f"{ms}ms"
    if ms >= 60_000:
        return f"{ms // 60_000}m{(ms % 60_000) / 1000:g}s"
    return f"{ms / 1000:g}s"
