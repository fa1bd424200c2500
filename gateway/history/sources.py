"""Where past spend comes from: spendgate's own archive files, and FOCUS 1.x cost-and-usage CSVs
(a provider's or a cloud's export, or spendgate's own). Each becomes spend events, each with an
id derived from its source row, so that loading the same file again is recognised.

FOCUS rows: a column or a tag names each row's team (and project); the row's other tags stay
its tags. The cost is BilledCost (or EffectiveCost, amortized), rounded to the nano; the charge
is dated at its ChargePeriodStart. Rows of spendgate's own export come back as what they were
(`x_SpendgateAllocation`): provider usage with its tokens per direction, cache hits, external
costs with their classification; its allocation rows (shared costs, shared teams' spend) are
skipped, as chargeback computes them again from the config. Another source's rows: `Usage` is
request spend (it feeds forecasts like the gateway's own), the other charge categories external
costs with their FOCUS classification. FOCUS does not carry request counts, so imported usage
counts no requests; a cache-hit row counts its hits.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import orjson

from gateway.analytics.focuslines import (
    EXTERNAL_COST,
    GATEWAY_CACHE,
    PROVIDER_USAGE,
    SHARED_COST_PART,
    SHARED_SPEND_PART,
)
from gateway.analytics.taxonomy import (
    CHARGE_CATEGORIES,
    SERVICE_SUBCATEGORIES,
    ChargeClass,
    default_subcategory,
)
from gateway.archiveformat import STREAM_ID_FIELD, read_archive
from gateway.types import NANO_PER_USD, SpendEvent

CostColumn = Literal["billed", "effective"]
MAX_PROBLEMS = 20  # a file wrong throughout is not worth a line per row
_ALLOCATIONS = frozenset({SHARED_COST_PART, SHARED_SPEND_PART})
# SkuMeter of spendgate's usage rows -> (prompt, cached prompt, completion, reasoning) per token
_METERS = {
    "Input Tokens": (1, 0, 0, 0),
    "Cached Input Tokens": (1, 1, 0, 0),
    "Output Tokens": (0, 0, 1, 0),
    "Reasoning Tokens": (0, 0, 1, 1),
    "Tokens": (1, 0, 0, 0),  # priced as billed: the line's tokens, not split by direction
}


class SourceError(ValueError):
    """A file that cannot be imported: every problem found, as "file:line: reason"."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        shown = self.problems[:MAX_PROBLEMS]
        more = len(self.problems) - len(shown)
        super().__init__("\n".join(shown) + (f"\n... and {more} more" if more else ""))


@dataclass(frozen=True, slots=True)
class FocusMapping:
    """How FOCUS rows map to spendgate's teams and projects."""

    team_column: str | None = None  # default: x_Team, when the file has it
    team_tag: str | None = None  # a key of the row's Tags
    team: str | None = None  # every row's team, or that of rows whose column or tag is empty
    project_column: str | None = None  # default: x_Project, when the file has it
    project_tag: str | None = None
    cost: CostColumn = "billed"


@dataclass
class Loaded:
    """What a file gave: its events, and the rows it skipped (by reason)."""

    events: list[SpendEvent] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)


def archive_events(path: Path) -> Loaded:
    """The spend events of one archive file (`<team>/<YYYY-MM-DD>.jsonl.gz`), ids as they were."""
    loaded, problems = Loaded(), []
    for n, record in enumerate(read_archive(path), 1):
        fields = {k: v for k, v in record.items() if k != STREAM_ID_FIELD}
        try:
            loaded.events.append(SpendEvent.from_fields(fields))
        except (TypeError, ValueError) as exc:
            problems.append(f"{path}: record {n}: not a spend event ({exc})")
    if problems:
        raise SourceError(problems)
    return loaded


def focus_events(path: Path, mapping: FocusMapping) -> Loaded:
    """The charges of a FOCUS CSV (plain or .gz) as spend events."""
    with _open_text(path) as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        rows = FocusRows(path, columns, mapping)
        loaded, problems = Loaded(), list(rows.missing_columns())
        if problems:
            raise SourceError(problems)
        seen: dict[str, int] = {}
        for line, row in enumerate(reader, 2):
            try:
                event = rows.event(row)
            except ValueError as exc:
                problems.append(f"{path}:{line}: {exc}")
                continue
            if isinstance(event, str):
                loaded.skipped[event] = loaded.skipped.get(event, 0) + 1
                continue
            loaded.events.append(_identified(event, seen))
    if problems:
        raise SourceError(problems)
    return loaded


@dataclass(frozen=True, slots=True)
class FocusRows:
    path: Path
    columns: Sequence[str]
    mapping: FocusMapping

    @property
    def team_column(self) -> str | None:
        m = self.mapping
        if m.team_column or m.team_tag:
            return m.team_column
        return "x_Team" if "x_Team" in self.columns and not m.team else None

    @property
    def project_column(self) -> str | None:
        m = self.mapping
        if m.project_column or m.project_tag:
            return m.project_column
        return "x_Project" if "x_Project" in self.columns else None

    @property
    def cost_column(self) -> str:
        return "EffectiveCost" if self.mapping.cost == "effective" else "BilledCost"

    def missing_columns(self) -> Iterator[str]:
        m = self.mapping
        if not (self.team_column or m.team_tag or m.team):
            yield (
                f"{self.path}: no team for its rows: name the column (--team-column) or tag "
                "(--team-tag) that holds it, or one team for every row (--team)"
            )
        needed = ["ChargePeriodStart", "ChargeCategory", self.cost_column]
        needed += [c for c in (self.team_column, self.project_column) if c]
        if m.team_tag or m.project_tag:
            needed.append("Tags")
        for column in needed:
            if column not in self.columns:
                yield f"{self.path}: no column {column!r} (its columns: {', '.join(self.columns)})"

    def event(self, row: Mapping[str, str]) -> SpendEvent | str:
        """The row's event, or why it is skipped."""
        allocation = _cell(row, "x_SpendgateAllocation")
        if allocation in _ALLOCATIONS:
            return "allocation rows (chargeback computes them from the config)"
        tags = _tags(row)
        team = self._pick(row, self.team_column, self.mapping.team_tag, tags) or self.mapping.team
        if not team:
            raise ValueError("no team: its team column or tag is empty (or give --team)")
        project = self._pick(row, self.project_column, self.mapping.project_tag, tags)
        for key in (self.mapping.team_tag, self.mapping.project_tag):
            tags.pop(key or "", None)
        cost = _nano(row, self.cost_column)
        category = _cell(row, "ChargeCategory")
        if category not in CHARGE_CATEGORIES:
            raise ValueError(f"ChargeCategory: {category!r} is not one of {CHARGE_CATEGORIES}")
        fields: dict[str, object] = {
            "event_id": "",  # set from the content by `_identified`
            "ts_ms": _instant(row, "ChargePeriodStart"),
            "team": team,
            "project": project or None,
            "environment": _cell(row, "x_Environment") or None,
            "workload": _cell(row, "x_Workload") or None,
            "tags": MappingProxyType(tags),
            "provider": _cell(row, "ProviderName"),
            "cost_nano": cost,
            "list_cost_nano": _nano(row, "ListCost") if _cell(row, "ListCost") else cost,
        }
        if allocation == EXTERNAL_COST or (not allocation and category != "Usage"):
            fields.update(
                kind="external",
                list_cost_nano=cost,  # no optimization applies: no savings
                description=_cell(row, "ChargeDescription") or None,
                charge=_charge_class(row, category).to_json(),
                units=_posts(row, allocation, category),
            )
            return SpendEvent(**fields)  # type: ignore[arg-type]
        served = _cell(row, "x_ServedModel") or _model_name(row)
        fields.update(
            kind="import",
            deployment=_cell(row, "x_Deployment") or _cell(row, "ResourceName"),
            served_model=served,
            requested_model=_cell(row, "x_RequestedModel") or served,
            units=0,  # FOCUS does not say how many requests
        )
        if allocation == GATEWAY_CACHE:
            # spendgate's own service: no provider; ConsumedQuantity counts the hits.
            fields.update(cache="hit", provider="", units=_whole(row, "ConsumedQuantity"))
        elif allocation == PROVIDER_USAGE:
            # The SKU's list cost is not what was saved against: the requested model's is.
            savings = _nano(row, "x_SavingsCost") if _cell(row, "x_SavingsCost") else 0
            fields["list_cost_nano"] = cost + savings
            fields.update(_tokens(row))
        return SpendEvent(**fields)  # type: ignore[arg-type]

    def _pick(
        self, row: Mapping[str, str], column: str | None, tag: str | None, tags: Mapping[str, str]
    ) -> str:
        if column:
            return _cell(row, column)
        return tags.get(tag, "") if tag else ""


def _identified(event: SpendEvent, seen: dict[str, int]) -> SpendEvent:
    """The event with an id derived from what it says (not from the file's layout, which a
    re-export may change), and which of the identical ones in its file it is."""
    content = orjson.dumps(event.to_fields(), option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256(content).hexdigest()[:32]
    occurrence = seen.get(digest, 0)
    seen[digest] = occurrence + 1
    event.event_id = f"imp:{digest}" + (f".{occurrence}" if occurrence else "")
    return event


def _posts(row: Mapping[str, str], allocation: str, category: str) -> int | None:
    """How many identical posted costs a row of spendgate's external costs stands for."""
    if allocation != EXTERNAL_COST or category not in ("Usage", "Purchase"):
        return None
    count = _whole(row, "PricingQuantity") if _cell(row, "PricingQuantity") else 1
    return count if count > 1 else None


def _tokens(row: Mapping[str, str]) -> dict[str, int]:
    """A usage row's tokens, by the direction its SkuMeter names."""
    weights = _METERS.get(_cell(row, "SkuMeter"))
    if weights is None or not _cell(row, "ConsumedQuantity"):
        return {}
    count = _whole(row, "ConsumedQuantity")
    names = ("prompt_tokens", "cached_prompt_tokens", "completion_tokens", "reasoning_tokens")
    return {name: w * count for name, w in zip(names, weights, strict=True)}


def _charge_class(row: Mapping[str, str], category: str) -> ChargeClass:
    service_category = _cell(row, "ServiceCategory")
    if service_category not in SERVICE_SUBCATEGORIES:
        service_category = "Other"  # a category of another FOCUS version
    subcategory = _cell(row, "ServiceSubcategory")
    if subcategory not in SERVICE_SUBCATEGORIES[service_category]:
        subcategory = default_subcategory(service_category)
    return ChargeClass(category, service_category, subcategory, _cell(row, "ServiceName") or None)


def _model_name(row: Mapping[str, str]) -> str:
    details = _cell(row, "SkuPriceDetails")
    try:
        parsed = orjson.loads(details) if details else {}
    except orjson.JSONDecodeError:
        return ""
    name = parsed.get("x_ModelName") if isinstance(parsed, dict) else None
    return name if isinstance(name, str) else ""


def _tags(row: Mapping[str, str]) -> dict[str, str]:
    text = _cell(row, "Tags")
    if not text:
        return {}
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ValueError(f"Tags: not a JSON object: {text[:80]!r}") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"Tags: not a JSON object: {text[:80]!r}")
    return {
        str(k): v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in parsed.items()
    }


def _cell(row: Mapping[str, str], column: str) -> str:
    return (row.get(column) or "").strip()


def _nano(row: Mapping[str, str], column: str) -> int:
    text = _cell(row, column)
    try:
        return int((Decimal(text) * NANO_PER_USD).to_integral_value())
    except InvalidOperation:
        raise ValueError(f"{column}: not a number: {text!r}") from None


def _whole(row: Mapping[str, str], column: str) -> int:
    text = _cell(row, column)
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{column}: not a number: {text!r}") from None
    if value != value.to_integral_value() or value < 0:
        raise ValueError(f"{column}: not a whole number: {text!r}")
    return int(value)


def _instant(row: Mapping[str, str], column: str) -> int:
    text = _cell(row, column)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{column}: not an ISO 8601 date-time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        import gzip

        return io.TextIOWrapper(gzip.open(path), encoding="utf-8-sig", newline="")
    return path.open(encoding="utf-8-sig", newline="")
