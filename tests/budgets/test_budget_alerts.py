"""Alert delivery against a real webhook receiver: Slack-shaped body, routing by event kind,
cooldown shared by replicas, failures logged without the (secret) URL, metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, Counter
from redis.asyncio import Redis

from gateway import rediskeys
from gateway.budgets.alerts import BUDGET_EXCEEDED, BUDGET_THRESHOLD, AlertSender
from gateway.budgets.ledger import BudgetLedger
from gateway.config.model import AlertsConfig, Webhook
from gateway.store.connect import close_store, open_store
from tests.budgets.support import TEAM, FakeClock, budget
from tests.conftest import SECRET_PATH, Receiver


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def alerts_config(
    receiver: Receiver, cooldown_s: float = 3600.0, timeout_s: float = 5.0
) -> AlertsConfig:
    return AlertsConfig(
        webhooks=(
            Webhook("finops", receiver.url("finops"), events=(BUDGET_THRESHOLD, BUDGET_EXCEEDED)),
            Webhook("oncall", receiver.url("oncall"), events=(BUDGET_EXCEEDED,)),
        ),
        cooldown_s=cooldown_s,
        timeout_s=timeout_s,
    )


def counter() -> Counter:
    return Counter("alerts", "test", ["kind", "outcome"], registry=CollectorRegistry())


def count(c: Counter, kind: str, outcome: str) -> float:
    return c.labels(kind=kind, outcome=outcome)._value.get()


async def test_threshold_alert_is_posted_logged_and_counted(
    store: Redis,
    receiver: Receiver,
    session: aiohttp.ClientSession,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    b = budget("alpha-monthly", limit_nano=100_000, thresholds=(50, 100))
    ledger = BudgetLedger(store, clock=clock)
    metrics = counter()
    sender = AlertSender(session, store, alerts_config(receiver), metrics)
    from tests.budgets.test_budget_ledger import event

    result = await ledger.settle(None, TEAM, "r1", [b], event(clock, 1, 60_000))
    ((crossed, pct),) = result.crossed
    with caplog.at_level(logging.WARNING, "spendgate.alerts"):
        assert await sender.budget_threshold(crossed, pct, result.status[0])
    assert "reached 50% of its monthly limit" in caplog.text
    assert list(receiver.posts) == ["finops"]  # oncall only takes budget_exceeded
    (body,) = receiver.posts["finops"]
    assert body["text"].startswith("[spendgate] Budget 'alpha-monthly' (team alpha) reached 50%")
    fields = {f["title"]: f["value"] for f in body["attachments"][0]["fields"]}
    assert fields["spent_usd"] == "0.00006" and fields["limit_usd"] == "0.0001"
    assert fields["threshold"] == "50" and fields["pct"] == "60.0"
    assert count(metrics, BUDGET_THRESHOLD, "sent") == 1


async def test_cooldown_is_shared_by_replicas(
    store: Redis, receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    metrics = counter()
    one = AlertSender(session, store, alerts_config(receiver), metrics)
    two = AlertSender(session, store, alerts_config(receiver), metrics)
    sent = await asyncio.gather(
        *(s.send(BUDGET_EXCEEDED, "alpha:b1:m203103", "over", {}) for s in [one, two] * 5)
    )
    assert sent.count(True) == 1
    assert len(receiver.posts["finops"]) == len(receiver.posts["oncall"]) == 1
    assert count(metrics, BUDGET_EXCEEDED, "suppressed") == 9
    assert await one.send(BUDGET_EXCEEDED, "alpha:b2:m203103", "other subject", {})
    # Cooldown over (the key expired): sent again, by a replica that did not send it (the one
    # that did keeps its own in-process copy of the cooldown). Which replica's SET NX wins the
    # race above depends on the store's connections: the local store's interleave them.
    loser = two if sent.index(True) % 2 == 0 else one
    await store.delete(rediskeys.alert_cooldown(BUDGET_EXCEEDED, "alpha:b1:m203103"))
    assert await loser.send(BUDGET_EXCEEDED, "alpha:b1:m203103", "over", {})


async def test_a_burst_of_one_alert_claims_its_cooldown_once(
    store: Redis,
    receiver: Receiver,
    session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Fifty requests refused by one budget at once: one alert, one SET NX in the store.
    metrics = counter()
    sender = AlertSender(session, store, alerts_config(receiver), metrics)
    claims: list[object] = []
    original = store.set

    async def counted(*args: object, **kwargs: object) -> object:
        claims.append(args)
        return await original(*args, **kwargs)

    monkeypatch.setattr(store, "set", counted)
    sent = await asyncio.gather(
        *(sender.send(BUDGET_EXCEEDED, "alpha:b1:m203103", "over", {}) for _ in range(50))
    )
    assert sent.count(True) == 1 and len(claims) == 1
    assert count(metrics, BUDGET_EXCEEDED, "suppressed") == 49
    assert len(receiver.posts["oncall"]) == 1


async def test_failures_never_raise_nor_leak_the_url(
    store: Redis,
    receiver: Receiver,
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = counter()
    # A timeout a loaded CI machine still answers within, and a delay well past it.
    config = alerts_config(receiver, cooldown_s=0, timeout_s=1.0)
    dead = Webhook("dead", f"http://127.0.0.1:1{SECRET_PATH}", events=(BUDGET_EXCEEDED,))
    bad = Webhook("bad", f"http://[::1{SECRET_PATH}", events=(BUDGET_EXCEEDED,))
    config = AlertsConfig(webhooks=(*config.webhooks, dead, bad), cooldown_s=0, timeout_s=1.0)
    sender = AlertSender(session, store, config, metrics)
    receiver.status = 500
    with caplog.at_level(logging.INFO):
        assert await sender.send(BUDGET_EXCEEDED, "s", "text", {"a": 1})
        receiver.status, receiver.delay_s = 200, 3.0
        assert await sender.send(BUDGET_EXCEEDED, "s", "text", {"a": 1})
    assert "webhook 'finops': HTTP 500" in caplog.text
    assert "webhook 'dead'" in caplog.text and "webhook 'bad'" in caplog.text
    assert "webhook 'oncall': TimeoutError" in caplog.text
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("spendgate"))
    assert "webhook" in ours and "secret" not in ours
    assert count(metrics, BUDGET_EXCEEDED, "webhook_failed") == 8


async def test_without_redis_the_cooldown_is_per_process(
    receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    dead = await open_store("redis://127.0.0.1:1/0")
    try:
        clock = FakeClock()
        sender = AlertSender(session, dead, alerts_config(receiver, cooldown_s=60), clock=clock)
        assert await sender.send(BUDGET_THRESHOLD, "s", "t", {})
        assert not await sender.send(BUDGET_THRESHOLD, "s", "t", {})
        clock.advance(61)
        assert await sender.send(BUDGET_THRESHOLD, "s", "t", {})
        assert len(receiver.posts["finops"]) == 2
    finally:
        await close_store(dead)


async def test_exceeded_alert_from_a_refused_reservation(
    store: Redis, receiver: Receiver, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    b = budget("alpha-daily", period="daily", limit_nano=10)
    ledger = BudgetLedger(store, clock=clock)
    sender = AlertSender(session, store, alerts_config(receiver))
    ok = await ledger.reserve(TEAM, "r1", [b], 5, 0, 60)
    assert not await sender.budget_exceeded(ok)  # nothing was refused
    refused = await ledger.reserve(TEAM, "r2", [b], 6, 0, 60)
    assert await sender.budget_exceeded(refused)
    assert not await sender.budget_exceeded(refused)  # cooldown
    (body,) = receiver.posts["oncall"]
    assert "Budget 'alpha-daily' (team alpha) is exhausted" in body["text"]
    fields = {f["title"]: f["value"] for f in body["attachments"][0]["fields"]}
    assert fields["on_exceed"] == "block" and fields["period"].startswith("daily (d2031")
