"""Rendering a `Report` as an aligned text table, CSV or JSON. Money is already an exact decimal
string in every cell; nothing here does arithmetic."""

from __future__ import annotations

import csv
import io
import re
from typing import Literal

import orjson

from gateway.reports.build import Report

Format = Literal["table", "csv", "json"]
FORMATS: tuple[Format, ...] = ("table", "csv", "json")
CONTENT_TYPES = {"table": "text/plain", "csv": "text/csv", "json": "application/json"}

_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def render(report: Report, fmt: Format) -> str:
    if fmt == "table":
        return render_table(report)
    if fmt == "csv":
        return render_csv(report)
    if fmt == "json":
        return render_json(report)
    raise ValueError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")


def render_table(report: Report) -> str:
    title = report.title or f"{report.kind} {report.period.label} (USD)"
    if not report.rows:
        return f"{title}\n(no data)\n"
    rows = [report.columns, *report.rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(report.columns))]
    numeric = [
        all(not cell or _NUMBER.fullmatch(cell) for cell in (r[i] for r in report.rows))
        for i in range(len(report.columns))
    ]
    lines = [title]
    for n, row in enumerate(rows):
        cells = [
            cell.rjust(w) if numeric[i] and n else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def render_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(report.columns)
    writer.writerows(report.rows)
    return out.getvalue()


def render_json(report: Report) -> str:
    return orjson.dumps(report.document, option=orjson.OPT_INDENT_2).decode() + "\n"
