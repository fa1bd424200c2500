"""The `budget_forecast` alert: a budget whose expected spend at the end of its period is over its
limit, what cloud budget tools call a forecasted alert. Its subject (one per budget and
period), its text and its Slack fields, which name the forecast's range and its track record so
that the reader knows how far to trust it."""

from __future__ import annotations

from datetime import datetime

from gateway.analytics.outlook import BudgetOutlook, LimitOutlook
from gateway.budgets.messages import describe_scope, format_usd, format_usd_estimate


def forecast_alert(
    outlook: BudgetOutlook, limit: LimitOutlook
) -> tuple[str, str, dict[str, object]]:
    """(subject, text, fields) for the limit of `outlook` that its forecast goes over."""
    spend, budget = outlook.spend, outlook.spend.budget
    expected = limit.period_end
    if expected is None or spend.period_end is None:
        raise ValueError(f"budget {budget.name!r} has no period end to forecast")

    def amount(value: float) -> str:
        if limit.unit == "tokens":
            return f"{round(value):,} tokens"
        return f"${format_usd(value) if isinstance(value, int) else format_usd_estimate(value)}"

    text = (
        f"Budget '{budget.name}' ({describe_scope(budget)}) is forecast to reach "
        f"{amount(expected.median)} by the end of its {budget.period} period {spend.period_id} "
        f"(80 % range {amount(expected.low80)} to {amount(expected.high80)}), over its limit of "
        f"{amount(limit.limit)}; {amount(limit.spent)} spent so far."
    )
    if limit.exhausted_at is not None:
        text += f" At the forecast rate it runs out at {_iso(limit.exhausted_at)}."
    suffix = "usd" if limit.unit == "usd" else "tokens"
    fields: dict[str, object] = {
        "budget": budget.name,
        "team": budget.team,
        "scope": f"{budget.scope} {budget.match}" if budget.match else budget.scope,
        "period": f"{budget.period} ({spend.period_id})",
        f"limit_{suffix}": _plain(limit.limit, limit.unit),
        f"spent_{suffix}": _plain(limit.spent, limit.unit),
        f"forecast_{suffix}": _plain(expected.median, limit.unit),
        "forecast_80": f"{_plain(expected.low80, limit.unit)} - "
        f"{_plain(expected.high80, limit.unit)}",
        "runs_out_at": "" if limit.exhausted_at is None else _iso(limit.exhausted_at),
        "resets_at": _iso(spend.period_end),
    }
    fitted = limit.fitted
    if fitted.model is not None:
        fields["model"] = fitted.model.name
    fields["history_days"] = fitted.history_days
    if fitted.accuracy is not None:
        if fitted.accuracy.mape_pct is not None:
            fields["mape_pct"] = f"{fitted.accuracy.mape_pct:.1f}"
        fields["coverage80_pct"] = f"{fitted.accuracy.coverage80_pct:.1f}"
    return f"{budget.team}:{budget.name}:{spend.period_id}", text, fields


def _plain(value: float, unit: str) -> str:
    """A field's value: tokens whole, USD exact when counted (an int), to the cent when
    forecast."""
    if unit == "tokens":
        return str(round(value))
    return format_usd(value) if isinstance(value, int) else format_usd_estimate(value)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
