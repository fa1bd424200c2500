"""Cascades: answer with a cheap model, escalate to a better one when the answer fails a check.

The checks are the verifiable ones, needing no model to judge: the answer was cut off
(`length`), JSON was asked for and the answer is not JSON (`invalid_json`, also tool-call
arguments that do not parse), it says nothing (`empty`), or it declines (`refusal`). Everything
here is pure except `run_cascade`, which only awaits the attempts it is given.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson

from gateway.bodies import response_format
from gateway.config.model import CASCADE_CHECKS, CascadeCheck
from gateway.errors import GatewayError

M = TypeVar("M")
# The order checks are evaluated in, so the most specific name is reported: a refusal is also
# empty (and not JSON), and a cut-off answer is often invalid JSON.
_ORDER: tuple[CascadeCheck, ...] = ("length", "refusal", "empty", "invalid_json")
# How assistants typically open a refusal (compared lowercased, straight apostrophes). Kept
# short on purpose: a false positive costs one more call on a better model, nothing else.
REFUSAL_PREFIXES = (
    "i'm sorry, but i can't",
    "i'm sorry, but i cannot",
    "i am sorry, but i cannot",
    "i'm sorry, i can't",
    "i'm sorry, i cannot",
    "sorry, i can't",
    "sorry, but i can't",
    "i can't help with",
    "i cannot help with",
    "i can't assist with",
    "i cannot assist with",
    "i'm unable to help",
    "i'm unable to assist",
    "i am unable to help",
    "i'm not able to help",
    "as an ai language model, i cannot",
)
_JSON_FORMATS = frozenset({"json_object", "json_schema"})


@dataclass(frozen=True, slots=True)
class _Answer:
    """One choice (or a Responses output) reduced to what the checks look at."""

    text: str | None
    refusal: str | None
    cut_off: bool
    tool_arguments: tuple[object, ...]  # each call's arguments (a JSON string, normally)


@dataclass(frozen=True, slots=True)
class Escalation:
    from_model: str
    to_model: str
    check: CascadeCheck  # what the from_model's answer failed


@dataclass(frozen=True, slots=True)
class CascadeResult(Generic[M]):
    response: dict[str, Any]  # the answer the client receives
    model: str  # the candidate that produced it
    metas: tuple[M, ...]  # every attempt's meta, in order: each attempt is billed
    escalations: tuple[Escalation, ...]
    unresolved: CascadeCheck | None = None  # the returned answer still fails this check
    error: GatewayError | None = None  # an escalation that failed; the previous answer stands


def failed_check(
    request_body: Mapping[str, Any],
    response: Mapping[str, Any],
    checks: Collection[str] = CASCADE_CHECKS,
) -> CascadeCheck | None:
    """The first of `checks` (in the order length, refusal, empty, invalid_json) that any
    choice of `response` fails, or None. Understands chat.completion, text_completion and
    Responses objects. JSON is expected when the request's `response_format` (chat) or
    `text.format` (Responses) is json_object (the content must parse) or json_schema (it must
    parse to an object); tool-call arguments must always parse to an object."""
    answers = list(_answers(response))
    if not answers:
        return "empty" if "empty" in checks else None
    json_kind = response_format(request_body)
    json_kind = json_kind if json_kind in _JSON_FORMATS else None
    for check in _ORDER:
        if check in checks and any(_fails(check, a, json_kind) for a in answers):
            return check
    return None


async def run_cascade(
    candidates: Sequence[str],
    attempt: Callable[[str], Awaitable[tuple[dict[str, Any], M]]],
    checks: Collection[str],
    request_body: Mapping[str, Any],
) -> CascadeResult[M]:
    """Ask `candidates` in order (cheapest first) until an answer passes every check.

    `attempt(model)` makes one complete call and returns `(response_json, meta)`. The first
    attempt's errors propagate. When a later attempt raises a GatewayError, the answer already
    in hand is returned with `error` set: the client still gets an answer, and every attempt
    that produced one is in `metas` to be billed. If every candidate fails, the last answer
    is returned with `unresolved` naming its failed check.
    """
    if not candidates:
        raise ValueError("a cascade needs at least one candidate")
    model = candidates[0]
    response, meta = await attempt(model)
    metas = [meta]
    escalations: list[Escalation] = []
    check = failed_check(request_body, response, checks)
    for better in candidates[1:]:
        if check is None:
            break
        try:
            next_response, next_meta = await attempt(better)
        except GatewayError as exc:
            return CascadeResult(
                response, model, tuple(metas), tuple(escalations), check, error=exc
            )
        escalations.append(Escalation(model, better, check))
        response, model = next_response, better
        metas.append(next_meta)
        check = failed_check(request_body, response, checks)
    return CascadeResult(response, model, tuple(metas), tuple(escalations), check)


def _fails(check: CascadeCheck, answer: _Answer, json_kind: str | None) -> bool:
    if check == "length":
        return answer.cut_off
    if check == "refusal":
        return bool(answer.refusal) or _sounds_like_refusal(answer.text)
    if check == "empty":
        return not (answer.text and answer.text.strip()) and not answer.tool_arguments
    if answer.tool_arguments:
        return not all(_parses_to_object(a) for a in answer.tool_arguments)
    if json_kind is None:
        return False
    if answer.text is None:
        return True
    try:
        value = orjson.loads(answer.text)
    except orjson.JSONDecodeError:
        return True
    return json_kind == "json_schema" and not isinstance(value, dict)


def _sounds_like_refusal(text: str | None) -> bool:
    if not text:
        return False
    head = text[:80].lstrip(" \n\t\"'").lower().replace("\u2019", "'")
    return head.startswith(REFUSAL_PREFIXES)


def _parses_to_object(arguments: object) -> bool:
    if not isinstance(arguments, str):
        return False
    try:
        return isinstance(orjson.loads(arguments), dict)
    except orjson.JSONDecodeError:
        return False


def _answers(response: Mapping[str, Any]) -> Iterator[_Answer]:
    if response.get("object") == "response" or isinstance(response.get("output"), list):
        yield _responses_answer(response)
        return
    for choice in response.get("choices") or ():
        if not isinstance(choice, Mapping):
            continue
        cut_off = choice.get("finish_reason") == "length"
        message = choice.get("message")
        if not isinstance(message, Mapping):  # legacy completions
            text = choice.get("text")
            yield _Answer(text if isinstance(text, str) else None, None, cut_off, ())
            continue
        content = message.get("content")
        refusal = message.get("refusal")
        calls = [
            call["function"].get("arguments")
            for call in message.get("tool_calls") or ()
            if isinstance(call, Mapping) and isinstance(call.get("function"), Mapping)
        ]
        legacy = message.get("function_call")
        if isinstance(legacy, Mapping):
            calls.append(legacy.get("arguments"))
        yield _Answer(
            content if isinstance(content, str) else None,
            refusal if isinstance(refusal, str) else None,
            cut_off,
            tuple(calls),
        )


def _responses_answer(response: Mapping[str, Any]) -> _Answer:
    details = response.get("incomplete_details")
    cut_off = response.get("status") == "incomplete" and (
        not isinstance(details, Mapping) or details.get("reason") == "max_output_tokens"
    )
    texts: list[str] = []
    refusals: list[str] = []
    calls: list[object] = []
    for item in response.get("output") or ():
        if not isinstance(item, Mapping):
            continue
        if item.get("type") == "function_call":
            calls.append(item.get("arguments"))
        for part in item.get("content") or () if item.get("type") == "message" else ():
            if not isinstance(part, Mapping):
                continue
            if part.get("type") == "output_text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif part.get("type") == "refusal" and isinstance(part.get("refusal"), str):
                refusals.append(part["refusal"])
    text = "".join(texts) if texts else None
    return _Answer(text, "".join(refusals) or None, cut_off, tuple(calls))
