"""The cold tier's file format, shared by its writer (`aggregator.archive`) and its readers
(`spendgate import`, anyone restoring history): `<team>/<YYYY-MM-DD>.jsonl.gz`, a sequence of
gzip members, each holding JSON lines, one per spend stream entry: the entry's fields
(`SpendEvent.to_fields()`) plus its stream id under `_stream_id`. A crash can leave a line
twice (written again after a restart) and a torn last member; readers drop both."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import orjson

STREAM_ID_FIELD = "_stream_id"
_READ_BYTES = 1 << 16


def read_archive(path: str | Path) -> Iterator[dict[str, str]]:
    """The records of one archive file in id order, each once (a line archived twice by a crash
    between file write and cursor update is dropped). A torn last member is ignored."""
    seen: set[str] = set()
    with Path(path).open("rb") as f:
        for _end, data in gzip_members(f):
            for line in data.splitlines():
                record = orjson.loads(line)
                stream_id = record.get(STREAM_ID_FIELD)
                if stream_id in seen:
                    continue
                seen.add(stream_id)
                yield record


def gzip_members(f: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """(end offset, content) of each complete gzip member; stops at a torn or corrupt tail."""
    start, fed, parts = 0, 0, []
    decomp = zlib.decompressobj(wbits=31)
    chunk = f.read(_READ_BYTES)
    while chunk:
        fed += len(chunk)
        try:
            parts.append(decomp.decompress(chunk))
        except zlib.error:
            return
        if decomp.eof:
            end = start + fed - len(decomp.unused_data)
            yield end, b"".join(parts)
            chunk, start, fed, parts = decomp.unused_data, end, 0, []
            decomp = zlib.decompressobj(wbits=31)
            if chunk:
                continue
        chunk = f.read(_READ_BYTES)
