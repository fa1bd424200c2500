"""Cascade checks on answers, and cascades escalating exactly on failing checks: unit tests
and a run against the mock upstream, which records every model asked."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from gateway.errors import UpstreamError
from gateway.providers.mock import MockUpstream
from gateway.routing.cascade import Escalation, failed_check, run_cascade

ALL = ("length", "invalid_json", "empty", "refusal")
CHAT: dict[str, Any] = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
JSON_OBJECT = {**CHAT, "response_format": {"type": "json_object"}}
JSON_SCHEMA = {
    **CHAT,
    "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
}


def answer(
    content: str | None = "Paris.",
    finish: str = "stop",
    refusal: str | None = None,
    tool_args: str | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": refusal}
    if tool_args is not None:
        message["tool_calls"] = [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": tool_args}}
        ]
    return {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }


@pytest.mark.parametrize(
    ("request_body", "response", "check"),
    [
        (CHAT, answer(), None),
        (CHAT, answer(finish="length"), "length"),
        (CHAT, answer(content=""), "empty"),
        (CHAT, answer(content="  \n"), "empty"),
        (CHAT, answer(content=None), "empty"),
        (CHAT, answer(content=None, tool_args='{"city": "Paris"}'), None),
        (CHAT, answer(content=None, tool_args='{"city": '), "invalid_json"),
        (CHAT, answer(content=None, tool_args="[1]"), "invalid_json"),
        (CHAT, answer(content=None, refusal="I can't help with that."), "refusal"),
        (CHAT, answer("I'm sorry, but I can't help with that request."), "refusal"),
        (CHAT, answer("I\u2019m sorry, but I cannot do this."), "refusal"),
        (CHAT, answer('"I can\'t assist with that."'), "refusal"),
        (CHAT, answer("I'm sorry to hear that. Here is how to fix it: ..."), None),
        (CHAT, answer("Sorry for the delay! The answer is 4."), None),
        (CHAT, answer("not json at all"), None),  # JSON was not asked for
        (JSON_OBJECT, answer('{"city": "Paris"}'), None),
        (JSON_OBJECT, answer("[1, 2]"), None),  # valid JSON is enough for json_object
        (JSON_OBJECT, answer("Sure! {"), "invalid_json"),
        (JSON_SCHEMA, answer('{"a": 1}'), None),
        (JSON_SCHEMA, answer("[1, 2]"), "invalid_json"),  # a schema answer is an object
        (JSON_SCHEMA, answer('{"a": ', finish="length"), "length"),  # the cause comes first
        (JSON_SCHEMA, answer(None, refusal="No."), "refusal"),
        (CHAT, {"object": "chat.completion", "choices": []}, "empty"),
    ],
)
def test_failed_check(
    request_body: dict[str, Any], response: dict[str, Any], check: str | None
) -> None:
    assert failed_check(request_body, response, ALL) == check


def test_only_configured_checks_count() -> None:
    assert failed_check(CHAT, answer(finish="length"), ("empty",)) is None
    assert failed_check(CHAT, answer(""), ("length", "refusal")) is None
    assert failed_check(JSON_OBJECT, answer("nope"), ("empty", "length")) is None


def test_any_failing_choice_fails_the_answer() -> None:
    two = answer()
    two["choices"].append({"index": 1, "message": {"content": ""}, "finish_reason": "stop"})
    assert failed_check(CHAT, two, ALL) == "empty"


def test_text_completions_and_responses() -> None:
    text = {"object": "text_completion", "choices": [{"text": "abc", "finish_reason": "length"}]}
    assert failed_check({"prompt": "x"}, text, ALL) == "length"
    incomplete = {
        "object": "response",
        "status": "incomplete",
        "incomplete_details": {"reason": "max_output_tokens"},
        "output": [],
    }
    assert failed_check({}, incomplete, ALL) == "length"
    refused = {
        "object": "response",
        "status": "completed",
        "output": [{"type": "message", "content": [{"type": "refusal", "refusal": "No."}]}],
    }
    assert failed_check({}, refused, ALL) == "refusal"
    fine = {
        "object": "response",
        "status": "completed",
        "output": [{"type": "message", "content": [{"type": "output_text", "text": '{"a":1}'}]}],
    }
    schema = {"text": {"format": {"type": "json_schema"}}}
    assert failed_check(schema, fine, ALL) is None
    call = {"object": "response", "output": [{"type": "function_call", "arguments": "{}"}]}
    assert failed_check({}, call, ALL) is None


# --- run_cascade ------------------------------------------------------------------------------


def scripted(answers: dict[str, dict[str, Any] | Exception]) -> tuple[list[str], Any]:
    asked: list[str] = []

    async def attempt(model: str) -> tuple[dict[str, Any], str]:
        asked.append(model)
        outcome = answers[model]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome, f"meta:{model}"

    return asked, attempt


async def test_a_passing_answer_is_not_escalated() -> None:
    asked, attempt = scripted({"a": answer(), "b": answer()})
    result = await run_cascade(["a", "b"], attempt, ALL, CHAT)
    assert asked == ["a"]
    assert (result.model, result.metas, result.escalations) == ("a", ("meta:a",), ())
    assert result.unresolved is None and result.error is None


async def test_escalates_while_a_check_fails() -> None:
    asked, attempt = scripted(
        {"a": answer(finish="length"), "b": answer(""), "c": answer("ok"), "d": answer()}
    )
    result = await run_cascade(["a", "b", "c", "d"], attempt, ALL, CHAT)
    assert asked == ["a", "b", "c"]
    assert result.model == "c" and result.response == answer("ok")
    assert result.metas == ("meta:a", "meta:b", "meta:c")
    assert result.escalations == (Escalation("a", "b", "length"), Escalation("b", "c", "empty"))


async def test_all_failing_returns_the_last_answer() -> None:
    asked, attempt = scripted({"a": answer(""), "b": answer(finish="length")})
    result = await run_cascade(["a", "b"], attempt, ALL, CHAT)
    assert asked == ["a", "b"]
    assert result.model == "b" and result.unresolved == "length"


async def test_a_failed_escalation_keeps_the_answer_in_hand() -> None:
    boom = UpstreamError("down", upstream_status=503)
    _, attempt = scripted({"a": answer(""), "b": boom})
    result = await run_cascade(["a", "b"], attempt, ALL, CHAT)
    assert result.model == "a" and result.error is boom and result.unresolved == "empty"
    assert result.metas == ("meta:a",) and result.escalations == ()


async def test_a_failed_first_attempt_raises() -> None:
    _, attempt = scripted({"a": UpstreamError("down", upstream_status=503), "b": answer()})
    with pytest.raises(UpstreamError):
        await run_cascade(["a", "b"], attempt, ALL, CHAT)
    with pytest.raises(ValueError, match="at least one"):
        await run_cascade([], attempt, ALL, CHAT)


# --- through the mock upstream ------------------------------------------------------------------

CHEAP, BEST = "gpt-4o-mini", "gpt-4o"


@pytest.mark.parametrize(
    ("body", "cheap_words", "checks", "escalated"),
    [
        # The cheap model rambles past max_tokens: cut off -> escalate.
        ({**CHAT, "max_tokens": 8}, 40, ALL, "length"),
        ({**CHAT, "max_tokens": 8}, 40, ("empty",), None),  # not a configured check
        ({**CHAT, "max_tokens": 64}, 40, ALL, None),
        # The cheap model says nothing: empty -> escalate.
        (CHAT, 0, ALL, "empty"),
        # JSON asked for and given: no escalation.
        ({**JSON_OBJECT, "max_tokens": 64}, 10, ALL, None),
    ],
)
async def test_cascade_against_the_mock(
    mock_upstream: MockUpstream,
    body: dict[str, Any],
    cheap_words: int,
    checks: tuple[str, ...],
    escalated: str | None,
) -> None:
    async with aiohttp.ClientSession() as session:

        async def attempt(model: str) -> tuple[dict[str, Any], int]:
            # The mock's reply length per model stands in for models of different quality.
            words = cheap_words if model == CHEAP else 5
            async with session.post(
                mock_upstream.base_url + "/chat/completions",
                json={**body, "model": model},
                headers={"x-mock-completion-tokens": str(words)},
            ) as response:
                raw = await response.read()
                return orjson.loads(raw), response.status

        result = await run_cascade([CHEAP, BEST], attempt, checks, body)
    reached = [r.model for r in mock_upstream.requests]
    if escalated is None:
        assert reached == [CHEAP] and result.escalations == ()
    else:
        assert reached == [CHEAP, BEST]
        assert result.escalations == (Escalation(CHEAP, BEST, escalated),)  # type: ignore[arg-type]
        assert result.response["model"] == BEST and result.metas == (200, 200)
    assert result.unresolved is None
