"""steady_rss.py's stopping rule and table (the measurement itself starts servers and wrk: it
is run by hand, its figures are in docs/benchmarks.md)."""

from __future__ import annotations

from loadtests.steady_rss import MB, Reading, steady, table

BOUND = 16 * MB


def reading(rss_mb: float, cache_mb: float, after: str = "embeddings") -> Reading:
    return Reading(after, 30_000, int(rss_mb * MB), int(cache_mb * MB))


def test_steady_needs_a_full_cache_and_rss_that_stopped_growing() -> None:
    assert steady([reading(143.5, 16.0), reading(144.4, 16.0)], BOUND)
    # Still growing by a megabyte or more: not yet.
    assert not steady([reading(143.5, 16.0), reading(144.5, 16.0)], BOUND)
    # RSS flat but the cache level not near its bound: a later load may still add to both.
    assert not steady([reading(140.0, 14.0), reading(140.2, 15.0)], BOUND)
    assert steady([reading(140.0, 14.0), reading(140.2, 15.3)], BOUND)
    # One reading has nothing to compare with; a zero bound (no memory level) never fills.
    assert not steady([reading(140.0, 16.0)], BOUND)
    assert not steady([reading(140.0, 0.0), reading(140.0, 0.0)], 0)


def test_the_table_has_a_row_per_reading_in_megabytes() -> None:
    text = table([reading(126.7, 0.0, "start"), reading(144.62, 16.0)])
    lines = text.splitlines()
    assert lines[0] == "| after | requests | RSS MB | cache level MB |"
    assert lines[2] == "| start | 30,000 | 126.7 | 0.0 |"
    assert lines[3] == "| embeddings | 30,000 | 144.6 | 16.0 |"
