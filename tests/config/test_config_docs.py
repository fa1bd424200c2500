"""docs/configuration.md documents every key the schema accepts, so the two cannot drift."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from gateway.config.checks import Check, Entries, ListOf, Record
from gateway.config.schema import RootSpec

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def key_paths(check: Check[object], path: str = "") -> Iterator[str]:
    """Every key path, written as the docs write them: `models.<name>.deployments[].id`."""
    if isinstance(check, Record):
        for name, spec_field in check.fields.items():
            sub = f"{path}.{name}" if path else name
            yield sub
            yield from key_paths(spec_field.metadata["check"], sub)
    elif isinstance(check, Entries):
        yield from key_paths(check.item, f"{path}.<name>")
    elif isinstance(check, ListOf):
        yield from key_paths(check.item, f"{path}[]")


def test_every_key_is_documented() -> None:
    text = DOCS.read_text()
    paths = list(key_paths(Record(RootSpec)))
    assert len(paths) > 40
    top_level = {p for p in paths if "." not in p}
    undocumented = [p for p in paths if p not in top_level and f"| `{p}` |" not in text]
    assert undocumented == []
    assert all(f"`{section}`" in text for section in top_level)
