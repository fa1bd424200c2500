"""The live state of one mock upstream app: recorded requests, pending injections, id counter.

It hangs off the app under `MOCK_STATE`, so every app (and every test) has its own.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from typing import Any

from aiohttp import web

from gateway.providers.mock.options import Injection, MockOptions, RecordedRequest


class MockState:
    def __init__(self, options: MockOptions) -> None:
        self.options = options
        self.records: deque[RecordedRequest] = deque(maxlen=max(1, options.record_limit))
        self.injections: list[Injection] = []
        # Set on app shutdown so requests sleeping in a "timeout" injection end promptly.
        self.stopping = asyncio.Event()
        self._ids = itertools.count(1)

    def next_id(self) -> int:
        return next(self._ids)

    def record(
        self, method: str, path: str, headers: dict[str, str], body: dict[str, Any] | None
    ) -> None:
        self.records.append(RecordedRequest(method, path, headers, body, time.monotonic()))

    def inject(self, injection: Injection) -> Injection:
        self.injections.append(injection)
        return injection

    def take_injection(self, path: str, model: object) -> Injection | None:
        """The first injection matching this request, counting one use against its `times`."""
        for index, injection in enumerate(self.injections):
            if injection.matches(path, model):
                if injection.times is not None:
                    injection.times -= 1
                    if injection.times <= 0:
                        del self.injections[index]
                return injection
        return None


MOCK_STATE: web.AppKey[MockState] = web.AppKey("mock_state", MockState)
