"""The one error tree of spendgate.

Every failure a client can see is a `GatewayError`; one middleware renders it as OpenAI's error
JSON (`{"error": {"message", "type", "param", "code"}}`) with the status below, so SDK retry logic
behaves as it does against OpenAI (it retries 408/409/429/5xx, never 400/401/404/413).

    GatewayError                        status  type                    code
    ├── InvalidRequest                  400     invalid_request_error   (varies)
    ├── PayloadTooLarge                 413     invalid_request_error   request_too_large
    ├── ClientClosed                    499     invalid_request_error   client_closed
    ├── AuthenticationFailed            401     authentication_error    invalid_api_key
    ├── PermissionDenied                403     permission_error        (varies)
    │   └── ApprovalRequired            403     permission_error        approval_required
    ├── ModelNotFound                   404     invalid_request_error   model_not_found
    ├── NotFound                        404     invalid_request_error   not_found
    ├── RateLimited                     429     rate_limit_error        (varies)
    │   └── RateLimitReached            429     requests | tokens       rate_limit_exceeded
    ├── ServiceUnavailable              503     server_error            service_unavailable
    │   └── ShuttingDown                503     server_error            shutting_down
    └── UpstreamError                   502     server_error            upstream_error
        └── UpstreamTimeout             504     server_error            upstream_timeout

`ClientClosed` is the client closing its connection before its request was read whole: nobody
receives that answer (499 is nginx's "client closed request"), it is only what the access log,
the metrics and the spend event record.

An upstream 429 that outlasts the retries is passed on as 429; an upstream 4xx other than
408/409/429 is passed on with its own status and message.

`UpstreamError.retryable` tells the router whether another attempt (same or next deployment) may
succeed: 429, 5xx, connection errors and timeouts are; 4xx answers from the upstream are not, and
those are passed back to the client with the upstream's own status and message.
`ConfigError` is not an HTTP error: it carries the file, key path and reason of a bad config.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

# Anything shaped like a credential is cut out of upstream messages before they reach a client
# or a log line: OpenAI/Anthropic/virtual keys, bearer tokens and long hex/base64 runs.
_SECRET_PATTERN = re.compile(
    r"(sk-[A-Za-z0-9_\-]{6,}|(?i:bearer)\s+[A-Za-z0-9._\-]{8,}|[A-Fa-f0-9]{32,}|"
    r"(?i:api[_-]?key)[\"'=:\s]+[A-Za-z0-9._\-]{8,})"
)


def redact(text: str) -> str:
    """Replace anything that looks like a secret with a fixed marker."""
    return _SECRET_PATTERN.sub("[redacted]", text)


class GatewayError(Exception):
    status = 500
    type = "server_error"
    code: str | None = "internal_error"
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param
        self.headers: Mapping[str, str] = headers or {}

    def to_dict(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"

    @classmethod
    def from_problems(cls, problems: Sequence[tuple[str, str]]) -> InvalidRequest:
        """One 400 naming every (key path, reason) problem of a body; `param`: the first path."""
        text = "; ".join(f"{path}: {reason}" if path else reason for path, reason in problems)
        return cls(text or "invalid request body", param=problems[0][0] if problems else None)


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class ClientClosed(GatewayError):
    status = 499
    type = "invalid_request_error"
    code = "client_closed"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class ApprovalRequired(PermissionDenied):
    """A request over an approval policy's limit (`code` approval_required, or
    approval_denied once an admin said no): the error object and the `x-sg-approval-id` header
    carry the approval's id, which an admin approves."""

    code = "approval_required"

    def __init__(self, message: str, approval_id: str, *, code: str | None = None) -> None:
        super().__init__(message, code=code, headers={"x-sg-approval-id": approval_id})
        self.approval_id = approval_id

    def to_dict(self) -> dict[str, object]:
        body = super().to_dict()
        body["error"]["approval_id"] = self.approval_id  # type: ignore[index]
        return body


class ModelNotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"
    retryable = True


class RateLimitReached(RateLimited):
    """A configured rate limit (`rate_limits:`), in OpenAI's own shape: the error's type is
    the kind of limit reached, `requests` or `tokens`."""

    def __init__(self, message: str, kind: str, *, headers: Mapping[str, str]) -> None:
        super().__init__(message, headers=headers)
        self.type = kind


class ServiceUnavailable(GatewayError):
    status = 503
    type = "server_error"
    code = "service_unavailable"
    retryable = True


class ShuttingDown(ServiceUnavailable):
    """A graceful stop reached its drain deadline with this request still running: a stream
    gets it as its last event, another request as its answer (retryable: on another replica)."""

    code = "shutting_down"


class UpstreamError(GatewayError):
    """An upstream answered badly or not at all. `upstream_status` is None for transport errors."""

    status = 502
    type = "server_error"
    code = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int | None = None,
        retryable: bool = True,
        body: bytes | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(redact(message), code=code)
        self.upstream_status = upstream_status
        self.retryable = retryable
        self.body = body
        # A non-retryable 4xx from the upstream is the client's problem: keep its status. A 429
        # that outlasted our retries stays a 429, so the client's SDK backs off in turn.
        if upstream_status == 429:
            self.status = 429
            self.type = "rate_limit_error"
            self.code = "rate_limit_exceeded"
        elif upstream_status is not None and 400 <= upstream_status < 500 and not retryable:
            self.status = upstream_status
            self.type = "invalid_request_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class ConfigError(Exception):
    """A config that cannot be used: every problem with its file, key path and reason."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"{self.source}: {len(self.problems)} problem(s)"]
        lines += [f"  {path or '<root>'}: {reason}" for path, reason in self.problems]
        return "\n".join(lines)
