"""Who pays: narrow a key's principal with the request's attribution headers.

A key may pin project / environment / workload; where it does not, the caller may name them with
`x-sg-project`, `x-sg-env`, `x-sg-workload`, and add tags with `x-sg-tags: k=v,k2=v2`. A header
may never contradict what the key pins: spend cannot be moved to another team's project that way.
`x-sg-revenue-usd` tells what the caller earns from the request, for inference margin.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from types import MappingProxyType

from gateway.errors import InvalidRequest, PermissionDenied
from gateway.types import Principal, usd_to_nano

_HEADERS = (("project", "x-sg-project"), ("environment", "x-sg-env"), ("workload", "x-sg-workload"))
_USD = re.compile(r"^\d{1,12}(\.\d{1,9})?$")
_NAME = re.compile(r"^[A-Za-z0-9_.:/-]{1,64}$")
MAX_TAGS = 16


def _parse_tags(raw: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in raw.split(","))):
        key, sep, value = pair.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not _NAME.match(key) or not _NAME.match(value):
            raise InvalidRequest(
                f"x-sg-tags: '{pair[:80]}' is not key=value of [A-Za-z0-9_.:/-], at most 64 chars"
            )
        tags[key] = value
    if len(tags) > MAX_TAGS:
        raise InvalidRequest(f"x-sg-tags: at most {MAX_TAGS} tags, got {len(tags)}")
    return tags


def attribute(principal: Principal, headers: Mapping[str, str]) -> Principal:
    """The principal this request is billed to; the key's own fields always win."""
    changes: dict[str, object] = {}
    for field, header in _HEADERS:
        value = headers.get(header)
        if value is None:
            continue
        if not _NAME.match(value):
            raise InvalidRequest(f"{header}: '{value[:80]}' must match [A-Za-z0-9_.:/-]{{1,64}}")
        pinned = getattr(principal, field)
        if pinned is None:
            changes[field] = value
        elif pinned != value:
            raise PermissionDenied(f"{header}: this key is bound to {field} '{pinned}'")
    raw_tags = headers.get("x-sg-tags")
    if raw_tags:
        tags = _parse_tags(raw_tags)
        for key, value in tags.items():
            if principal.tags.get(key, value) != value:
                raise PermissionDenied(
                    f"x-sg-tags: this key is bound to tag {key}={principal.tags[key]}"
                )
        changes["tags"] = MappingProxyType({**tags, **principal.tags})
    return dataclasses.replace(principal, **changes) if changes else principal  # type: ignore[arg-type]


def revenue_of(headers: Mapping[str, str]) -> int | None:
    """Revenue the caller attributes to this request (`x-sg-revenue-usd`), in nano-USD."""
    raw = headers.get("x-sg-revenue-usd")
    if raw is None:
        return None
    if not _USD.match(raw.strip()):
        raise InvalidRequest(
            f"x-sg-revenue-usd: '{raw[:40]}' must be a non-negative decimal USD amount "
            "with at most 9 decimals"
        )
    return usd_to_nano(raw.strip())
