"""The `anomaly` alert: one message when an anomaly opens, one when it escalates, one when it
resolves, in Slack's mrkdwn, naming the ranked causes as the report shows them.

Sent through `AlertSender` (webhooks subscribed to `anomaly`, the log, `sg_alerts_total`): its
subject is the anomaly's id and the change, so a replica that re-runs a bucket, or a retry,
never sends one twice. Nothing is sent for an anomaly suppressed by `expected` feedback, nor
after a person marked it `expected`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from gateway.analytics.anomaly import Anomaly, Feedback
from gateway.analytics.causes import Cause
from gateway.analytics.detector import Change
from gateway.analytics.money import usd_text
from gateway.types import nano_to_usd_str

if TYPE_CHECKING:
    from gateway.budgets.alerts import AlertSender

ANOMALY = "anomaly"

_COLORS = {"low": "#439FE0", "medium": "warning", "high": "danger", "critical": "danger"}
_KIND_WORDS = {
    "spike": "spend spike",
    "drop": "spend dropped to zero",
    "drift": "spend drifting up",
}
_CAUSE_WORDS = {
    "key": "key",
    "model": "model",
    "route": "route",
    "volume": "more requests",
    "cache": "fewer cache hits",
    "size": "bigger requests",
    "mix": "dearer mix",
    "escalation": "cascade escalations",
    "errors": "requests failing",
}


async def send_change(sender: AlertSender, change: Change, feedback: Feedback | None) -> bool:
    """Alert about a change, unless people said it is expected. True if it was sent."""
    anomaly = change.anomaly
    if anomaly.suppressed_by is not None or (feedback and feedback.verdict == "expected"):
        return False
    subject = f"{anomaly.id}:{change.event}"
    if change.event == "escalated":
        subject += f":{anomaly.severity}"
    return await sender.send(
        ANOMALY,
        subject,
        message(change),
        fields(anomaly),
        color="good" if change.event == "resolved" else _COLORS.get(anomaly.severity),
    )


def message(change: Change) -> str:
    a = change.anomaly
    where = f"team *{a.team}*" if a.scope == "team" else f"team *{a.team}* ({_scope(a.scope)})"
    what = _KIND_WORDS[a.kind]
    since = _time(a.start_s)
    if change.event == "resolved":
        head = f":white_check_mark: Resolved: {what} in {where}, since {since}"
        body = f"back within its band. It lasted {_duration(a.end_s - a.start_s)}: {_numbers(a)}."
    else:
        verb = "escalated to" if change.event == "escalated" else "opened,"
        head = f":rotating_light: Spend anomaly in {where} {verb} *{a.severity}*: {what}"
        body = f"since {since}: {_numbers(a)}."
    causes = "; ".join(describe(c) for c in a.causes) or "none found"
    return f"{head}, {body}\nPossible causes: {causes}.\nid `{a.id}`"


def describe(cause: Cause, *, markup: bool = True) -> str:
    """One cause as the alert and the report's table say it (`markup`: Slack's code marks)."""
    name = _CAUSE_WORDS.get(cause.kind, cause.kind)
    if cause.value:
        name = f"{name} `{cause.value}`" if markup else f"{name} {cause.value}"
    sign = "+" if cause.excess_nano >= 0 else "-"
    return f"{name} {sign}{_usd(abs(cause.excess_nano))} ({cause.share:.0%}; {cause.detail})"


def fields(a: Anomaly) -> dict[str, object]:
    top = a.causes[0] if a.causes else None
    values: dict[str, object] = {
        "team": a.team,
        "kind": a.kind,
        "severity": a.severity,
        "status": a.status,
        "scope": a.scope,
        "start": _time(a.start_s),
        "actual_usd": nano_to_usd_str(a.actual_nano),
        "expected_usd": nano_to_usd_str(a.expected_nano),
        "excess_usd": nano_to_usd_str(a.excess_nano),
    }
    if top is not None:
        values["top_cause"] = describe(top)
    values["id"] = a.id
    return values


def _numbers(a: Anomaly) -> str:
    actual, expected = _usd(a.actual_nano), _usd(a.expected_nano)
    band = f"{_usd(a.band_low_nano)}-{_usd(a.band_high_nano)}"
    if a.kind == "drift":
        return (
            f"{actual} in the last day, {_usd(a.excess_nano)} more than at the level of "
            f"{_duration(a.end_s - a.start_s - 86_400)} before ({expected})"
        )
    span = f"{a.buckets} bucket{'s' if a.buckets != 1 else ''} of {_duration(a.bucket_s)}"
    return f"{actual} spent against {expected} expected (band {band}) over {span}"


def _scope(scope: str) -> str:
    label, _, value = scope.partition(":")
    return f"{label} `{value}`"


def _usd(nano: int) -> str:
    return usd_text(nano)


def _time(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(epoch_s))


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours // 24} days"
