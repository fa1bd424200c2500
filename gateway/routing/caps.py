"""Per-model prompt caps: a ceiling on requested output tokens and on prompt size.

A request over a cap is refused with a 400 that names the field, the limit and the model, before
anything is reserved or sent. Pure; the pipeline passes in the prompt count it already made.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.config.model import ModelRoute
from gateway.errors import InvalidRequest

# The fields that bound output, per endpoint (the pipeline's token-cap table agrees).
OUTPUT_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
_PROMPT_PARAM = {
    "chat/completions": "messages",
    "completions": "prompt",
    "embeddings": "input",
    "responses": "input",
}


def check_caps(
    route: ModelRoute, endpoint: str, body: Mapping[str, Any], prompt_tokens: int | None
) -> None:
    """Raise InvalidRequest when `body` asks for more output than `route.max_tokens_cap` or its
    prompt (`prompt_tokens`, an exact count: never a cheap upper bound) is over
    `route.max_prompt_tokens`. `prompt_tokens=None` skips the prompt check."""
    cap = route.max_tokens_cap
    if cap is not None:
        for name in OUTPUT_FIELDS:
            asked = body.get(name)
            if isinstance(asked, int) and not isinstance(asked, bool) and asked > cap:
                raise InvalidRequest(
                    f"{name} is {asked}, but model '{route.name}' allows at most {cap} output "
                    f"tokens per request; send {name} <= {cap}",
                    param=name,
                    code="max_tokens_exceeded",
                )
    limit = route.max_prompt_tokens
    if limit is not None and prompt_tokens is not None and prompt_tokens > limit:
        raise InvalidRequest(
            f"the prompt is {prompt_tokens} tokens, but model '{route.name}' accepts at most "
            f"{limit} prompt tokens per request; shorten it or use another model",
            param=_PROMPT_PARAM.get(endpoint),
            code="prompt_too_large",
        )


def default_output_cap(route: ModelRoute, server_default: int) -> int:
    """The output limit sent upstream for a request that sets none: the server's default,
    lowered to the model's cap when it has one."""
    cap = route.max_tokens_cap
    return server_default if cap is None else min(server_default, cap)
