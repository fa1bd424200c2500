"""Wiring of the mock upstream: the route table, a started server, and the test helper.

`create_mock_app` builds the app; `serve_mock` starts it on a socket; `MockUpstream` does both
as an async context manager and exposes the recording and injections to tests.
"""

from __future__ import annotations

from types import TracebackType

from aiohttp import web

from gateway.listen import start_site
from gateway.providers.mock.anthropic import handle_messages
from gateway.providers.mock.chat import handle_chat
from gateway.providers.mock.completions import handle_completions
from gateway.providers.mock.control import add_control_routes
from gateway.providers.mock.embeddings import handle_embeddings
from gateway.providers.mock.gate import Call, endpoint
from gateway.providers.mock.options import (
    Injection,
    InjectionMode,
    MockOptions,
    RecordedRequest,
)
from gateway.providers.mock.responses import handle_responses
from gateway.providers.mock.state import MOCK_STATE, MockState
from gateway.providers.mock.wire import json_response

# Load tests send large prompts; aiohttp's default 1 MiB body limit would turn them into 413s.
MAX_BODY_BYTES = 64 * 1024 * 1024


async def handle_models(call: Call) -> web.StreamResponse:
    data = [
        {"id": model, "object": "model", "created": 1700000000, "owned_by": "mock"}
        for model in call.options.models
    ]
    return json_response({"object": "list", "data": data})


async def handle_health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _wake_sleepers(app: web.Application) -> None:
    app[MOCK_STATE].stopping.set()


def create_mock_app(options: MockOptions | None = None) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[MOCK_STATE] = MockState(options if options is not None else MockOptions())
    route = app.router
    route.add_post("/v1/chat/completions", endpoint(handle_chat))
    route.add_post("/v1/completions", endpoint(handle_completions))
    route.add_post("/v1/embeddings", endpoint(handle_embeddings))
    route.add_post("/v1/responses", endpoint(handle_responses))
    route.add_get("/v1/models", endpoint(handle_models))
    route.add_post("/v1/messages", endpoint(handle_messages, "anthropic"))
    route.add_post("/messages", endpoint(handle_messages, "anthropic"))
    route.add_get("/healthz", handle_health)
    add_control_routes(app)
    app.on_shutdown.append(_wake_sleepers)
    return app


async def serve_mock(
    host: str = "127.0.0.1", port: int = 0, options: MockOptions | None = None
) -> web.AppRunner:
    """Start the mock on host:port (0 picks a free port) and return its runner; the caller
    calls `runner.cleanup()`. `runner.addresses[0][1]` is the bound port. Raises
    `PortUnavailable` when the port cannot be bound."""
    # handler_cancellation: a client that gives up (timeouts in tests and load tests) cancels
    # its handler instead of leaving it sleeping; no access log, it costs throughput.
    runner = web.AppRunner(
        create_mock_app(options), handler_cancellation=True, access_log=None, shutdown_timeout=1.0
    )
    await runner.setup()
    try:
        await start_site(runner, host, port, backlog=1024)
    except BaseException:
        await runner.cleanup()
        raise
    return runner


class MockUpstream:
    """A running mock for tests: `async with MockUpstream() as mock:` then point a client at
    `mock.base_url` (OpenAI, includes /v1) or `mock.url` (Anthropic, without /v1)."""

    def __init__(
        self, options: MockOptions | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.options = options if options is not None else MockOptions()
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        self._state: MockState | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    @property
    def state(self) -> MockState:
        if self._state is None:
            raise RuntimeError("MockUpstream is not running; use `async with MockUpstream()`")
        return self._state

    @property
    def requests(self) -> list[RecordedRequest]:
        """The recorded requests, oldest first (a snapshot copy)."""
        return list(self.state.records)

    def inject(
        self,
        *,
        status: int | None = None,
        mode: InjectionMode | None = None,
        model: str | None = None,
        path: str | None = None,
        times: int | None = None,
        delay_s: float = 3600.0,
        after_chunks: int = 0,
        message: str | None = None,
        retry_after_s: float = 1.0,
    ) -> Injection:
        """Add an injection (see `Injection`); it is checked after those added before it."""
        return self.state.inject(
            Injection(
                status=status,
                mode=mode,
                delay_s=delay_s,
                after_chunks=after_chunks,
                model=model,
                path=path,
                times=times,
                message=message,
                retry_after_s=retry_after_s,
            )
        )

    def clear_requests(self) -> None:
        self.state.records.clear()

    def clear_injections(self) -> None:
        self.state.injections.clear()

    def clear(self) -> None:
        """Back to a fresh state: forget recorded requests and remove all injections."""
        self.clear_requests()
        self.clear_injections()

    async def __aenter__(self) -> MockUpstream:
        runner = await serve_mock(self.host, self.port, self.options)
        self._runner = runner
        self._state = runner.app[MOCK_STATE]
        self.port = runner.addresses[0][1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self._runner = None
