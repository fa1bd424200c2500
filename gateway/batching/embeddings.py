"""Embeddings micro-batching: concurrent requests with identical parameters share one upstream call.

Requests of one group (same model and parameters, see `group_key`) are merged, inputs
concatenated in arrival order, into one call of at most `max_inputs` inputs. A batch is sent as
soon as no call of its group is in flight (at the end of the event-loop turn: what arrived
together goes together), else when that call returns, and at the latest `window_s` after its
first request: under load requests merge while the previous call runs, and a lone request never
waits. The answer is split back so each client sees exactly the response it would have got
alone the answer is split back so each client sees exactly the response it would have got
alone (its own `data` with indexes from 0, its own `usage`). The upstream's prompt tokens are
apportioned over the clients by their own token counts (largest remainder, so the parts sum to
the upstream's total). Flush tasks belong to the batcher; `aclose` drains them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, NamedTuple, TypeVar

import orjson

from gateway.errors import ServiceUnavailable, UpstreamError
from gateway.pricing.tokens import count_prompt, count_text

if TYPE_CHECKING:
    from gateway.metrics import Metrics

M = TypeVar("M")
InputKind = Literal["text", "tokens"]
EmbeddingCall = Callable[[dict[str, Any]], Awaitable[tuple[dict[str, Any], M]]]

# OpenAI's per-input limit for its embedding models. A longer input would make the upstream
# refuse the whole merged call, so requests carrying one are sent alone.
DEFAULT_MAX_INPUT_TOKENS = 8191


class EmbeddingShare(NamedTuple, Generic[M]):
    """One client's part of a (possibly shared) embeddings call."""

    response: dict[str, Any]  # the client's own OpenAI embeddings response
    usage_share: int  # prompt tokens billed to this client
    meta: M  # what `call` returned beside the body (e.g. the deployment that served it)
    batch_requests: int  # client requests in the upstream call (1: not merged)
    estimated: bool = False  # the upstream reported no usage: usage_share is our own count


def group_key(body: dict[str, Any]) -> str:
    """Requests may share a call only when everything but `input` is identical (model,
    dimensions, encoding_format, user, ...): canonical JSON of the rest."""
    rest = {k: v for k, v in body.items() if k != "input" and v is not None}
    return orjson.dumps(rest, option=orjson.OPT_SORT_KEYS).decode()


def apportion(total: int, weights: Sequence[int]) -> list[int]:
    """Split `total` in proportion to `weights` by the largest-remainder method: the parts sum
    exactly to `total`; ties go to the earlier weight. All-zero weights split evenly."""
    if not weights:
        return []
    if sum(weights) <= 0:
        weights = [1] * len(weights)
    whole = sum(weights)
    parts = [total * w // whole for w in weights]
    remainders = [total * w % whole for w in weights]
    short = total - sum(parts)
    for i in sorted(range(len(weights)), key=lambda i: (-remainders[i], i))[:short]:
        parts[i] += 1
    return parts


@dataclass(slots=True)
class _Member(Generic[M]):
    body: dict[str, Any]
    items: list[Any]
    tokens: int
    future: asyncio.Future[EmbeddingShare[M]]


@dataclass(slots=True)
class _Batch(Generic[M]):
    key: tuple[str, InputKind]
    members: list[_Member[M]] = field(default_factory=list)
    inputs: int = 0
    timer: asyncio.Handle | None = None  # the flush to come (call_soon or call_later)


class EmbeddingBatcher(Generic[M]):
    """`submit` returns this client's share; `call(merged_body)` makes one upstream call and
    returns `(response_json, meta)`, raising a GatewayError on failure.

    Sent alone, without waiting: requests with `max_inputs` inputs or more, inputs of a shape
    we do not recognise, empty strings, or inputs over `max_input_tokens` (each of these could
    make the upstream refuse the merged call). If a merged call is refused with a client error
    (a non-retryable 4xx), each member is retried alone so only the culprit sees the error;
    any other failure (5xx, 429, timeout: already retried by the router) goes to every member.
    A client that goes away during the window is dropped from the batch; one that goes away
    once the call is made leaves its inputs in it (the gateway pays for them, not the client).
    """

    def __init__(
        self,
        window_s: float,
        max_inputs: int,
        call: EmbeddingCall[M],
        *,
        metrics: Metrics | None = None,
        max_input_tokens: int = DEFAULT_MAX_INPUT_TOKENS,
    ) -> None:
        self.window_s = window_s
        self.max_inputs = max(1, max_inputs)
        self.max_input_tokens = max_input_tokens
        self.calls = 0  # upstream calls made, merged or not
        self._call = call
        self._metrics = metrics
        self._open: dict[tuple[str, InputKind], _Batch[M]] = {}
        self._in_flight: dict[tuple[str, InputKind], int] = {}  # calls per group
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, group: str, body: dict[str, Any]) -> EmbeddingShare[M]:
        split = _split_input(body.get("input"))
        if split is None or self.window_s <= 0 or len(split[0]) >= self.max_inputs:
            return await self._alone(body, split)
        tokens = self._count(split[0], _model(body))
        if tokens is None:
            return await self._alone(body, split)
        items, kind = split
        key = (group, kind)
        batch = self._open.get(key)
        if batch is not None and batch.inputs + len(items) > self.max_inputs:
            self._flush(batch)
            batch = None
        loop = asyncio.get_running_loop()
        if batch is None:
            batch = _Batch(key)
            self._open[key] = batch
            if self._in_flight.get(key):
                batch.timer = loop.call_later(self.window_s, self._flush, batch)
            else:
                batch.timer = loop.call_soon(self._flush, batch)
        future: asyncio.Future[EmbeddingShare[M]] = loop.create_future()
        batch.members.append(_Member(body, items, tokens, future))
        batch.inputs += len(items)
        if batch.inputs >= self.max_inputs:
            self._flush(batch)
        return await future

    async def aclose(self) -> None:
        """Send the batches still collecting now, and wait for every call in progress."""
        for batch in list(self._open.values()):
            self._flush(batch)
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _count(self, items: list[Any], model: str) -> int | None:
        """The client's prompt tokens (as `count_prompt` counts embeddings), or None when an
        input must not join a batch."""
        total = 0
        for item in items:
            if isinstance(item, str):
                if not item:
                    return None
                n = count_text(item, model)
            else:
                n = len(item)
            if n > self.max_input_tokens:
                return None
            total += n
        return total

    async def _alone(
        self, body: dict[str, Any], split: tuple[list[Any], InputKind] | None
    ) -> EmbeddingShare[M]:
        self.calls += 1
        self._observe(body, 1, len(split[0]) if split else 1)
        response, meta = await self._call(body)
        prompt = _reported_tokens(response)
        if prompt is None:
            counted = count_prompt(body, "embeddings", _model(body))
            return EmbeddingShare(response, counted, meta, 1, estimated=True)
        return EmbeddingShare(response, prompt, meta, 1)

    def _flush(self, batch: _Batch[M]) -> None:
        if self._open.get(batch.key) is batch:
            del self._open[batch.key]
        if batch.timer is not None:
            batch.timer.cancel()
            batch.timer = None
        if not batch.members:
            return
        key = batch.key
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._sent(key, done))

    def _sent(self, key: tuple[str, InputKind], task: asyncio.Task[None]) -> None:
        """A call of `key` returned: what collected meanwhile goes now."""
        self._tasks.discard(task)
        left = self._in_flight[key] - 1
        if left:
            self._in_flight[key] = left
        else:
            del self._in_flight[key]
        if (waiting := self._open.get(key)) is not None:
            self._flush(waiting)

    async def _send(self, batch: _Batch[M]) -> None:
        # Clients that left during the window are not sent at all.
        members = [m for m in batch.members if not m.future.done()]
        if not members:
            return
        if len(members) == 1:
            await self._settle_alone(members[0], batch.key[1])
            return
        first = members[0].body
        merged = {**first, "input": [item for m in members for item in m.items]}
        self.calls += 1
        self._observe(first, len(members), len(merged["input"]))
        try:
            response, meta = await self._call(merged)
            shares = _split_response(response, meta, members)
        except asyncio.CancelledError:
            _fail(members, ServiceUnavailable("the gateway is shutting down; retry"))
            raise
        except UpstreamError as exc:
            if exc.retryable or exc.upstream_status is None or not 400 <= exc.upstream_status < 500:
                _fail(members, exc)
                return
            # One member's input was refused: find out whose by sending each alone.
            await asyncio.gather(*(self._settle_alone(m, batch.key[1]) for m in members))
            return
        except Exception as exc:  # any failure of the shared call is every member's failure
            _fail(members, exc)
            return
        for member, share in zip(members, shares, strict=True):
            if not member.future.done():
                member.future.set_result(share)

    async def _settle_alone(self, member: _Member[M], kind: InputKind) -> None:
        try:
            share = await self._alone(member.body, (member.items, kind))
        except asyncio.CancelledError:
            _fail([member], ServiceUnavailable("the gateway is shutting down; retry"))
            raise
        except Exception as exc:  # delivered to the one client it belongs to
            _fail([member], exc)
            return
        if not member.future.done():
            member.future.set_result(share)

    def _observe(self, body: dict[str, Any], requests: int, inputs: int) -> None:
        if self._metrics is None:
            return
        model = str(body.get("model"))
        self._metrics.embedding_batch_requests.labels(model).observe(requests)
        self._metrics.embedding_batch_inputs.labels(model).observe(inputs)


def _fail(members: Sequence[_Member[M]], exc: BaseException) -> None:
    for member in members:
        if not member.future.done():
            member.future.set_exception(exc)


def _split_input(value: object) -> tuple[list[Any], InputKind] | None:
    """A request's inputs as items, and their kind: one string, strings, one token list, or
    token lists. None for anything else (sent alone; the upstream judges it)."""
    if isinstance(value, str):
        return [value], "text"
    if not isinstance(value, list) or not value:
        return None
    if all(_is_token(v) for v in value):
        return [value], "tokens"
    if all(isinstance(v, str) for v in value):
        return list(value), "text"
    if all(isinstance(v, list) and v and all(_is_token(t) for t in v) for v in value):
        return list(value), "tokens"
    return None


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    return model if isinstance(model, str) else ""


def _is_token(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _reported_tokens(response: dict[str, Any]) -> int | None:
    usage = response.get("usage")
    if not isinstance(usage, dict):
        return None
    for name in ("prompt_tokens", "total_tokens"):
        value = usage.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def _split_response(
    response: dict[str, Any], meta: M, members: Sequence[_Member[M]]
) -> list[EmbeddingShare[M]]:
    """Each member's own response out of the merged one."""
    data = response.get("data")
    expected = sum(len(m.items) for m in members)
    if not isinstance(data, list) or len(data) != expected:
        got = len(data) if isinstance(data, list) else "no"
        raise UpstreamError(f"upstream returned {got} embeddings for {expected} inputs")
    if all(isinstance(d, dict) and _is_token(d.get("index")) for d in data):
        data = sorted(data, key=lambda d: d["index"])
    total = _reported_tokens(response)
    weights = [m.tokens for m in members]
    parts = apportion(total, weights) if total is not None else weights
    envelope = {k: v for k, v in response.items() if k not in ("data", "usage")}
    shares: list[EmbeddingShare[M]] = []
    offset = 0
    for member, part in zip(members, parts, strict=True):
        mine = data[offset : offset + len(member.items)]
        own = [{**d, "index": i} if isinstance(d, dict) else d for i, d in enumerate(mine)]
        body = {**envelope, "data": own}
        if total is not None:
            body["usage"] = {"prompt_tokens": part, "total_tokens": part}
        shares.append(EmbeddingShare(body, part, meta, len(members), estimated=total is None))
        offset += len(member.items)
    return shares
