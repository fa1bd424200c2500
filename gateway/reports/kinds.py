"""The report kinds, in a module of their own: `spendgate --help` lists them without loading
the report stack (`reports.cli`), and `reports.build` builds them."""

from __future__ import annotations

from typing import Literal, get_args

ReportKind = Literal[
    "showback",
    "chargeback",
    "focus",
    "forecast",
    "anomalies",
    "scorecard",
    "review",
    "maturity",
    "recommendations",
    "tagging",
]
# "forecast" looks ahead from now rather than at a period: `reports.forecast` builds it;
# "anomalies" lists anomaly records, not rollups: `reports.anomalies` builds it; the scorecard
# reads budgets and anomalies too: `reports.scorecard` builds it; "review" covers one ISO week:
# `reports.review` builds it; "maturity" the last 30 days: `reports.maturity` builds it; the
# recommendations read signal rollups, budgets and keys: `reports.recommendations` builds them.
KINDS: tuple[ReportKind, ...] = get_args(ReportKind)
# Reports of any run of days (the others cover one calendar month).
DAY_RANGES: tuple[ReportKind, ...] = ("showback", "tagging")
