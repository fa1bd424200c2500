"""The request path's pipelined connections on a Redis Cluster: one `wire.Wire` per primary,
each command sent to the primary that owns its key's slot.

The slot table is redis-py's (the cluster client's, which serves everything off the request
path), read from the cluster on first use. MOVED (a failover promoted a replica, or a slot was
resharded) updates it, sends the command to the new owner and reads the whole table again; ASK
sends the command once to the importing node, after ASKING; TRYAGAIN and CLUSTERDOWN (a
failover under way) send it again shortly. Those replies mean the command did not run, so
sending it again never counts money twice. A lost connection fails its callers, as on one
server (callers that move money spool and replay by event id), and the table is read again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import AskError, MovedError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.store.wire import Address, Command, Waiter, Wire

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("spendgate.store")

_MAX_ATTEMPTS = 6  # sends of one command (redirects and retries included)
_RETRY_S = 0.05  # before sending again after TRYAGAIN / CLUSTERDOWN, times the attempt
_REFRESH_GAP_S = 0.25  # between two reads of the slot table (a failover fails many commands)
_EVAL = frozenset({"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"})


def is_cluster(redis: Redis | RedisCluster) -> bool:
    """True for a client of a Redis Cluster (`redis+cluster://`)."""
    return isinstance(redis, RedisCluster)


def slot_of(key: str | bytes) -> int:
    """The cluster slot of `key` (its hash tag's, if it has one)."""
    return key_slot(key.encode() if isinstance(key, str) else key)


def by_slot(keys: Iterable[str]) -> dict[int, list[str]]:
    """`keys` grouped by slot: what one multi-key command may touch on a cluster."""
    groups: dict[int, list[str]] = {}
    for key in keys:
        groups.setdefault(slot_of(key), []).append(key)
    return groups


def command_key(args: Command) -> Any:
    """The key a command is routed by: the first key of EVAL/EVALSHA, the first stream of
    XREADGROUP (the aggregator's reads), else the first argument (GET, SET, HINCRBY...: the
    commands the request path sends). None: no key (any node)."""
    name = args[0].upper() if isinstance(args[0], str) else args[0].decode().upper()
    if name in _EVAL:
        return args[3] if len(args) > 3 and int(args[2]) > 0 else None
    if name == "XREADGROUP":
        words = [a.upper() if isinstance(a, str) else a for a in args]
        return args[words.index("STREAMS", 4) + 1] if "STREAMS" in words[4:] else None
    return args[1] if len(args) > 1 else None


class Router:
    """Batches of commands in (as `Wire.send`), each routed to its slot's primary."""

    def __init__(self, cluster: RedisCluster, template: Address) -> None:
        self._cluster = cluster
        self._template = template  # credentials, TLS, client name; host and port per node
        self._wires: dict[tuple[str, int], Wire] = {}
        self._queued: list[tuple[Command, Waiter]] = []  # until the slot table is known
        self._waiting: set[Waiter] = set()  # callers not answered yet
        self._refresh: asyncio.Task[None] | None = None
        self._refreshed_at = -_REFRESH_GAP_S
        self._closed = False

    @classmethod
    def of(cls, redis: Redis | RedisCluster) -> Router | None:
        """A router for `redis`'s cluster, if its nodes speak RESP2 with fixed credentials;
        else None (keep redis-py's cluster pipeline)."""
        if not isinstance(redis, RedisCluster):
            return None
        kwargs = redis.nodes_manager.connection_kwargs
        template = Address.from_kwargs(kwargs["connection_class"], kwargs)
        return None if template is None else cls(redis, template)

    @property
    def nodes(self) -> list[tuple[str, int]]:
        """The nodes this router has a connection (or had one) to."""
        return list(self._wires)

    def send(self, batch: Sequence[tuple[Command, Waiter]]) -> None:
        if self._closed:
            _fail(batch, RedisConnectionError("the store connection is closed"))
            return
        for _, waiter in batch:
            if waiter not in self._waiting:
                self._waiting.add(waiter)
                waiter.add_done_callback(self._waiting.discard)
        if not self._cluster.nodes_manager.slots_cache:
            self._queued.extend(batch)
            self._read_slots()
            return
        groups: dict[tuple[str, int], list[tuple[Command, Waiter]]] = {}
        for args, waiter in batch:
            self._route(groups, args, waiter, 1)
        for node, group in groups.items():
            self._wire(node).send(group)

    async def drain(self) -> None:
        """Until every command sent so far has its reply (or failed)."""
        while True:
            pending = [w for w in self._waiting if not w.done()]
            if self._refresh is not None:
                await asyncio.gather(self._refresh, return_exceptions=True)
            if not pending:
                return
            await asyncio.gather(*pending, return_exceptions=True)

    async def aclose(self) -> None:
        await asyncio.gather(*(wire.drain() for wire in self._wires.values()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await self.drain()
        self._closed = True
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh
        await asyncio.gather(*(wire.aclose(0) for wire in self._wires.values()))
        queued, self._queued = self._queued, []
        _fail(queued, RedisConnectionError("the store connection is closed"))
        _fail([(None, w) for w in self._waiting], RedisConnectionError("the store is closed"))

    # routing

    def _route(
        self,
        groups: dict[tuple[str, int], list[tuple[Command, Waiter]]],
        args: Command,
        waiter: Waiter,
        attempt: int,
    ) -> None:
        """Add the command to the group of its slot's primary, answered through `_answered`."""
        try:
            node = self._primary(args)
        except RedisError as exc:  # the slot has no primary (a failover under way)
            self._read_slots()
            if not waiter.done():
                waiter.set_exception(RedisConnectionError(f"store cluster: {exc}"))
            return
        sent = asyncio.get_running_loop().create_future()
        sent.add_done_callback(functools.partial(self._answered, args, waiter, attempt))
        groups.setdefault(node, []).append((args, sent))

    def _primary(self, args: Command) -> tuple[str, int]:
        key = command_key(args)
        manager = self._cluster.nodes_manager
        if key is None:
            node = manager.default_node or next(iter(manager.nodes_cache.values()))
        else:
            node = manager.get_node_from_slot(slot_of(key))
        return node.host, int(node.port)

    def _answered(self, args: Command, waiter: Waiter, attempt: int, sent: Waiter) -> None:
        if waiter.done():  # its caller stopped waiting
            return
        exc = sent.exception()
        if exc is None:
            waiter.set_result(sent.result())
            return
        if isinstance(exc, ResponseError) and attempt < _MAX_ATTEMPTS and not self._closed:
            kind, _, detail = str(exc).partition(" ")
            if kind == "MOVED":  # the new owner now; the rest of the table from the cluster
                moved = MovedError(detail)
                self._read_slots()
                self._send_to((moved.host, int(moved.port)), [(args, waiter)], attempt + 1)
                return
            if kind == "ASK":  # once to the importing node, the slot table unchanged
                ask = AskError(detail)
                asking: Waiter = asyncio.get_running_loop().create_future()
                asking.add_done_callback(_ignore)
                node = (ask.host, int(ask.port))
                self._send_to(node, [(("ASKING",), asking), (args, waiter)], attempt + 1)
                return
            if kind in ("TRYAGAIN", "CLUSTERDOWN"):
                self._read_slots()
                asyncio.get_running_loop().call_later(
                    _RETRY_S * attempt, self._retry, args, waiter, attempt + 1
                )
                return
        if isinstance(exc, RedisConnectionError):
            self._read_slots()  # the node may be gone: a replica takes its slots
        waiter.set_exception(exc)

    def _retry(self, args: Command, waiter: Waiter, attempt: int) -> None:
        if waiter.done():
            return
        if self._closed:
            waiter.set_exception(RedisConnectionError("the store connection is closed"))
            return
        groups: dict[tuple[str, int], list[tuple[Command, Waiter]]] = {}
        self._route(groups, args, waiter, attempt)
        for node, group in groups.items():
            self._wire(node).send(group)

    def _send_to(
        self, node: tuple[str, int], batch: list[tuple[Command, Waiter]], attempt: int
    ) -> None:
        """Send to `node` as it is; the last command is the caller's, answered as usual."""
        *extra, (args, waiter) = batch
        sent = asyncio.get_running_loop().create_future()
        sent.add_done_callback(functools.partial(self._answered, args, waiter, attempt))
        self._wire(node).send([*extra, (args, sent)])

    def _wire(self, node: tuple[str, int]) -> Wire:
        wire = self._wires.get(node)
        if wire is None:
            address = dataclasses.replace(self._template, host=node[0], port=node[1])
            wire = self._wires[node] = Wire(address)
        return wire

    # the slot table

    def _read_slots(self) -> None:
        """Read the slot table from the cluster (once at a time, at most every
        _REFRESH_GAP_S), then send what waited for it."""
        if self._refresh is None and not self._closed:
            self._refresh = asyncio.get_running_loop().create_task(self._read_slots_now())

    async def _read_slots_now(self) -> None:
        try:
            await asyncio.sleep(max(0.0, self._refreshed_at + _REFRESH_GAP_S - time.monotonic()))
            self._refreshed_at = time.monotonic()
            try:
                if self._cluster.nodes_manager.slots_cache:
                    await self._cluster.nodes_manager.initialize()
                else:
                    await self._cluster.initialize()
            except (RedisError, OSError) as exc:
                log.warning("store cluster: cannot read the slot table: %s", exc)
                queued, self._queued = self._queued, []
                _fail(queued, RedisConnectionError(f"cannot reach the store cluster: {exc}"))
                return
        finally:
            self._refresh = None
        queued, self._queued = self._queued, []
        if queued:
            self.send(queued)


def _ignore(future: Waiter) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: an ASKING that failed fails its command too


def _fail(batch: Sequence[tuple[Any, Waiter]], exc: Exception) -> None:
    for _, waiter in batch:
        if not waiter.done():
            waiter.set_exception(exc)
