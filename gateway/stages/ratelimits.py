"""Rate limits as a stage: before the cache and the budgets, each request takes one request
against every rate limit that applies to it (per key, team or model), or gets a 429 in OpenAI's
shape; every answer carries OpenAI's `x-ratelimit-*` headers for the tightest limit of each
kind; after the response its tokens are counted against the token limits."""

from __future__ import annotations

import functools
import math
from collections.abc import Awaitable

from gateway.config.model import Config, RateLimitRule
from gateway.errors import RateLimitReached
from gateway.ratelimits.limiter import Bundle, Limit, RateLimiter
from gateway.stages.base import Context, Services, Stage
from gateway.types import Principal

_MAX_KNOWN = 10_000  # (key, team, model) bundles kept; more are forgotten at once
_WHAT = {"requests": "requests per minute (RPM)", "tokens": "tokens per minute (TPM)"}


class RateLimits(Stage):
    name = "rate_limits"

    def __init__(self, services: Services) -> None:
        super().__init__(services)
        config, _ = services.snapshot()
        self.limiter = RateLimiter(services.store, services.clock, config.rate_limits.local_share)
        # (key id, team, model) -> the limits of this config's rules and their slices (a
        # reload starts again).
        self._bundles: dict[tuple[str, str, str], Bundle] = {}
        self._rules: tuple[RateLimitRule, ...] = config.rate_limits.rules

    def swap(self, config: Config) -> None:
        self.limiter.local_share = config.rate_limits.local_share
        self._bundles, self._rules = {}, config.rate_limits.rules

    async def aclose(self) -> None:
        await self.limiter.aclose()

    def before(self, ctx: Context) -> Awaitable[None] | None:
        rules, record = ctx.config.rate_limits.rules, ctx.record
        if not rules:
            return None
        p, model = record.principal, record.model
        assert p is not None and model is not None
        bundle = self._bundles.get((p.key_id, p.team, model))
        if bundle is None or rules is not self._rules:
            bundle = self._bundle(rules, p, model)
        if not bundle.limits:
            return None
        now = self.services.clock()
        if not self.limiter.admit_now(bundle, now):
            return self._admit(ctx, bundle)  # a slice needs the store first
        self._admitted(ctx, bundle, now)
        return None

    async def _admit(self, ctx: Context, bundle: Bundle) -> None:
        _, over = await self.limiter.admit(bundle)
        now = self.services.clock()
        if over is None:
            self._admitted(ctx, bundle, now)
            return
        wait_s = self.limiter.reset_in(now)
        ctx.headers.update(headers(bundle, wait_s))
        record = ctx.record
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

    def _admitted(self, ctx: Context, bundle: Bundle, now: float) -> None:
        made = headers(bundle, self.limiter.reset_in(now))
        if ctx.headers:
            ctx.headers.update(made)
        else:
            ctx.headers = made
        ctx.notes[self.name] = bundle

    def _bundle(self, rules: tuple[RateLimitRule, ...], p: Principal, model: str) -> Bundle:
        bundle = Bundle(tuple(applicable(rules, p, model)))
        if rules is self._rules:  # else a request that began before a reload: not kept
            if len(self._bundles) >= _MAX_KNOWN:
                self._bundles.clear()
            self._bundles[(p.key_id, p.team, model)] = bundle
        return bundle

    def after(self, ctx: Context) -> None:
        bundle = ctx.notes.get(self.name)
        if isinstance(bundle, Bundle):
            self.limiter.consume(bundle, ctx.record.tokens)


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


def headers(bundle: Bundle, wait_s: float) -> dict[str, str]:
    """OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, for the limit of each
    kind with the least left. On every answer, so written for speed: one pass per kind, no call
    per slice, and the dict made at its size."""
    reset = reset_text(wait_s)
    requests, tokens = bundle.requests, bundle.tokens
    if requests:
        r, r_left = requests[0], _LARGEST
        for s in requests:
            if (left := s.limit - s.shared + s.claimed - s.used) < r_left:  # Slice.remaining
                r, r_left = s, left
        if not tokens:
            return {_LIMIT_R: r.limit_text, _LEFT_R: _count(r_left), _RESET_R: reset}
    t, t_left = tokens[0], _LARGEST
    for s in tokens:
        if (left := s.limit - s.shared + s.claimed - s.used) < t_left:
            t, t_left = s, left
    if not requests:
        return {_LIMIT_T: t.limit_text, _LEFT_T: _count(t_left), _RESET_T: reset}
    return {
        _LIMIT_R: r.limit_text,
        _LEFT_R: _count(r_left),
        _RESET_R: reset,
        _LIMIT_T: t.limit_text,
        _LEFT_T: _count(t_left),
        _RESET_T: reset,
    }


def _count(n: int) -> str:
    return str(n) if n > 0 else "0"


_LARGEST = 2**63
_LIMIT_R, _LEFT_R, _RESET_R = (f"x-ratelimit-{h}-requests" for h in ("limit", "remaining", "reset"))
_LIMIT_T, _LEFT_T, _RESET_T = (f"x-ratelimit-{h}-tokens" for h in ("limit", "remaining", "reset"))


def reset_text(seconds: float) -> str:
    """A wait as OpenAI writes it: `340ms`, `12.5s`, `1m0s`."""
    return _reset_text(max(0, math.ceil(seconds * 1000)))


@functools.lru_cache(maxsize=256)  # the requests of one millisecond share it
def _reset_text(ms: int) -> str:
    if ms < 1000:
        return f"{ms}ms"
    if ms >= 60_000:
        return f"{ms // 60_000}m{(ms % 60_000) / 1000:g}s"
    return f"{ms / 1000:g}s"
