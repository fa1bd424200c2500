"""The mock's own control endpoints under `/_mock/`, for tests that drive it over HTTP.

GET/DELETE `/_mock/requests` read or clear the recording; POST `/_mock/inject` adds one
injection (a JSON object) or several (a list), GET lists them, DELETE clears them.
These requests are not recorded.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from gateway.providers.mock.errors import error_response
from gateway.providers.mock.options import Injection
from gateway.providers.mock.state import MOCK_STATE
from gateway.providers.mock.wire import json_response


async def list_requests(request: web.Request) -> web.Response:
    return json_response([r.to_json() for r in request.app[MOCK_STATE].records])


async def clear_requests(request: web.Request) -> web.Response:
    records = request.app[MOCK_STATE].records
    cleared = len(records)
    records.clear()
    return json_response({"cleared": cleared})


async def list_injections(request: web.Request) -> web.Response:
    return json_response([i.to_json() for i in request.app[MOCK_STATE].injections])


async def add_injections(request: web.Request) -> web.Response:
    state = request.app[MOCK_STATE]
    try:
        data = orjson.loads(await request.read())
        items = data if isinstance(data, list) else [data]
        injections = [Injection.from_json(item) for item in items]
    except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
        return error_response(400, f"bad injection: {exc}")
    for injection in injections:
        state.inject(injection)
    return json_response([i.to_json() for i in injections])


async def clear_injections(request: web.Request) -> web.Response:
    injections = request.app[MOCK_STATE].injections
    cleared = len(injections)
    injections.clear()
    return json_response({"cleared": cleared})


def add_control_routes(app: web.Application) -> None:
    app.router.add_get("/_mock/requests", list_requests)
    app.router.add_delete("/_mock/requests", clear_requests)
    app.router.add_get("/_mock/inject", list_injections)
    app.router.add_post("/_mock/inject", add_injections)
    app.router.add_delete("/_mock/inject", clear_injections)
