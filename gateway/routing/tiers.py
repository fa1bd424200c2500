"""Model tiering: which of a tier's candidate models answers a request, and why.

Pure functions over a `TierConfig`: `features` reads what the rules look at from a request once,
`decide` picks the first rule whose conditions all hold (else the tier's default), and
`explain` renders the decision for the `x-sg-route` response header and the spend event.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.bodies import response_format
from gateway.config.model import TIER_HINTS, TierCondition, TierConfig, TierHint
from gateway.errors import InvalidRequest
from gateway.routing.cascade import Escalation
from gateway.types import Principal

TIER_HEADER = "x-sg-tier"
ROUTE_HEADER = "x-sg-route"
HINT_METADATA_KEY = "sg_tier"
CASCADE_ENDPOINTS = frozenset({"chat/completions", "completions", "responses"})

# "Code in the prompt": a fence, or a line that starts like code in a common language, or
# tokens prose rarely contains. A heuristic; a miss or a false hit only changes a model choice.
_CODE = re.compile(
    r"```"
    r"|^\s*(?:def|class|import|from\s+[\w.]+\s+import|#include|package|using\s+[\w.]+;"
    r"|public\s|private\s|fn\s+\w+|func\s+\w+|function\s*\w*\s*\(|(?:const|let|var)\s+\w+\s*="
    r"|SELECT\s.+\sFROM\s|CREATE\s+TABLE)"
    r"|\)\s*=>|\)\s*\{\s*$|console\.log\(|System\.out\.|std::|<\?php|</?div\b|;\s*$",
    re.MULTILINE,
)


@dataclass(frozen=True, slots=True)
class RequestFeatures:
    """What tier rules can see of a request (computed once per request)."""

    endpoint: str
    prompt_tokens: int
    hint: TierHint | None
    has_tools: bool
    has_response_format: bool
    has_code: bool
    messages: int
    stream: bool = False


@dataclass(frozen=True, slots=True)
class TierDecision:
    tier: str
    model: str  # an exposed model name (a key of Config.models)
    rule: str | None  # the rule that fired; None: the tier's default
    reason: str  # the conditions that held, for logs
    # Candidates to try in order when a cascade applies (the first is `model`); () otherwise.
    cascade: tuple[str, ...] = ()

    @property
    def rule_name(self) -> str:
        return self.rule or "default"


def tier_hint(body: Mapping[str, Any], headers: Mapping[str, str]) -> TierHint | None:
    """The quality hint: header `x-sg-tier`, else `metadata.sg_tier`. Raises InvalidRequest for
    a value that is not economy, standard or premium (a typo must not pass silently)."""
    raw: object = headers.get(TIER_HEADER)
    source = f"header {TIER_HEADER}"
    if raw is None:
        metadata = body.get("metadata")
        raw = metadata.get(HINT_METADATA_KEY) if isinstance(metadata, Mapping) else None
        source = f"metadata.{HINT_METADATA_KEY}"
    if raw is None:
        return None
    value = raw.strip().lower() if isinstance(raw, str) else raw
    for hint in TIER_HINTS:
        if value == hint:
            return hint
    raise InvalidRequest(
        f"{source} must be one of {', '.join(TIER_HINTS)}, not {raw!r}",
        param=TIER_HEADER if source.startswith("header") else "metadata",
        code="invalid_tier_hint",
    )


def features(
    body: Mapping[str, Any], endpoint: str, prompt_tokens: int, headers: Mapping[str, str]
) -> RequestFeatures:
    messages = _messages(body, endpoint)
    return RequestFeatures(
        endpoint=endpoint,
        prompt_tokens=prompt_tokens,
        hint=tier_hint(body, headers),
        has_tools=bool(body.get("tools") or body.get("functions")),
        has_response_format=response_format(body) is not None,
        has_code=bool(_CODE.search(_last_user_text(messages, body, endpoint))),
        messages=len(messages) if endpoint in ("chat/completions", "responses") else 1,
        stream=body.get("stream") is True,
    )


def decide(
    tier: TierConfig,
    features: RequestFeatures,
    principal: Principal,
    budget_used_pct: float | None = None,
) -> TierDecision:
    """The first rule whose conditions all hold picks the model; else the tier's default.

    A cascade applies when the tier has one, the endpoint supports it, the request is not a
    stream (unless the tier's cascade allows streams) and a better candidate exists: it runs
    from the decided model up through the candidates after it.
    """
    model, rule, reason = tier.default, None, "no rule matched"
    for candidate in tier.rules:
        held = _holds(candidate.when, features, principal, budget_used_pct)
        if held is not None:
            model, rule, reason = candidate.use, candidate.name, held
            break
    cascade: tuple[str, ...] = ()
    if (
        tier.cascade is not None
        and features.endpoint in CASCADE_ENDPOINTS
        and (not features.stream or tier.cascade.stream)
        and model in tier.candidates
    ):
        ladder = tier.candidates[tier.candidates.index(model) :]
        cascade = ladder if len(ladder) > 1 else ()
    return TierDecision(tier.name, model, rule, reason, cascade)


def explain(
    decision: TierDecision,
    served: str | None = None,
    escalations: Sequence[Escalation] = (),
) -> str:
    """The `x-sg-route` header value, e.g. "tier=auto; rule=long-prompt; model=gpt-4o", with
    "; cascade=gpt-4o-mini(length)>gpt-4o" when the answer came from an escalation."""
    model = served or (escalations[-1].to_model if escalations else decision.model)
    text = f"tier={decision.tier}; rule={decision.rule_name}; model={model}"
    if escalations:
        steps = ">".join(f"{e.from_model}({e.check})" for e in escalations)
        text += f"; cascade={steps}>{escalations[-1].to_model}"
    return text


def _holds(
    when: TierCondition,
    f: RequestFeatures,
    principal: Principal,
    budget_used_pct: float | None,
) -> str | None:
    """Why the condition holds (its parts joined), or None if any part fails."""
    why: list[str] = []

    def need(ok: bool, text: str) -> bool:
        why.append(text)
        return ok

    checks = (
        when.prompt_tokens_gt is None
        or need(
            f.prompt_tokens > when.prompt_tokens_gt,
            f"prompt_tokens {f.prompt_tokens} > {when.prompt_tokens_gt}",
        ),
        when.prompt_tokens_lte is None
        or need(
            f.prompt_tokens <= when.prompt_tokens_lte,
            f"prompt_tokens {f.prompt_tokens} <= {when.prompt_tokens_lte}",
        ),
        not when.hint or need(f.hint in when.hint, f"hint={f.hint}"),
        not when.team or need(principal.team in when.team, f"team={principal.team}"),
        not when.project or need(principal.project in when.project, f"project={principal.project}"),
        not when.environment
        or need(principal.environment in when.environment, f"environment={principal.environment}"),
        when.budget_used_pct_gte is None
        or need(
            budget_used_pct is not None and budget_used_pct >= when.budget_used_pct_gte,
            f"budget_used_pct {budget_used_pct} >= {when.budget_used_pct_gte}",
        ),
        when.has_tools is None or need(f.has_tools == when.has_tools, f"has_tools={f.has_tools}"),
        when.has_response_format is None
        or need(
            f.has_response_format == when.has_response_format,
            f"has_response_format={f.has_response_format}",
        ),
        when.has_code is None or need(f.has_code == when.has_code, f"has_code={f.has_code}"),
        when.messages_gt is None
        or need(f.messages > when.messages_gt, f"messages {f.messages} > {when.messages_gt}"),
    )
    if not all(checks):
        return None
    return ", ".join(why) or "always"


def _messages(body: Mapping[str, Any], endpoint: str) -> list[Any]:
    if endpoint == "chat/completions":
        messages = body.get("messages")
        return messages if isinstance(messages, list) else []
    if endpoint == "responses":
        given = body.get("input")
        if isinstance(given, list):
            return given
        return [{"role": "user", "content": given}] if isinstance(given, str) else []
    return []


def _last_user_text(messages: list[Any], body: Mapping[str, Any], endpoint: str) -> str:
    if endpoint == "completions":
        prompt = body.get("prompt")
        if isinstance(prompt, list):
            return "\n".join(p for p in prompt if isinstance(p, str))
        return prompt if isinstance(prompt, str) else ""
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role", "user") == "user":
            return _text_of(message.get("content"))
    return ""


def _text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    return ""
