"""cache_bound.py's load, counter and table (the measurement itself starts servers and wrk: it
is run by hand, its figures are in docs/benchmarks.md)."""

from __future__ import annotations

import orjson

from loadtests.cache_bound import MB, Cell, evictions, table
from loadtests.scenarios import LARGE_EMBEDDINGS


def test_every_request_asks_for_large_embeddings_never_sent_before() -> None:
    bodies = LARGE_EMBEDDINGS.bodies()
    first, second = orjson.loads(bodies()), orjson.loads(bodies())
    assert first["dimensions"] == second["dimensions"] == 1536
    assert first["input"] != second["input"]
    script = LARGE_EMBEDDINGS.wrk_script.read_text()
    assert '"dimensions": 1536' in script and LARGE_EMBEDDINGS.path in script


def test_evictions_are_read_from_the_metrics_page() -> None:
    page = "# TYPE sg_cache_redis_evictions_total counter\nsg_cache_redis_evictions_total 1234.0\n"
    assert evictions(page) == 1234
    assert evictions("sg_cache_redis_errors_total 3.0\n") == 0


def test_the_table_has_a_row_per_cell_and_no_file_for_redis() -> None:
    lines = table(
        [
            Cell("spendgate-local", 18_000, 901.4, 298 * MB, 171 * MB, 7_000),
            Cell("spendgate-redis", 20_000, 1_000.2, 297 * MB, 0, 9_500),
        ]
    ).splitlines()
    assert lines[2] == "| spendgate-local | 18,000 | 901 | 298.0 | 171.0 | 7,000 |"
    assert lines[3] == "| spendgate-redis | 20,000 | 1,000 | 297.0 | - | 9,500 |"
