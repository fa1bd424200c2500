"""From raw measurements to what docs/benchmarks.md publishes: medians across rounds, figures
added over the direct mock, spendgate's ratios to the bare proxy and to LiteLLM, the design
targets checked, markdown tables, and the py-spy profile's hottest functions.

Pure functions over the results dict that run.py writes as JSON (so a saved run can be re-read).
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

Results = dict[str, Any]

# The design's targets (shared/DESIGN.md, issue 5).
MIN_SHARE_OF_BARE = 0.5
MIN_TIMES_LITELLM = 25.0
MAX_ADDED_P50_MS = 0.5
MAX_ADDED_P99_MS = 1.5
MAX_STREAM_TTFB_ADDED_MS = 1.0
MAX_RSS_MB = 150.0
MAX_START_S = 2.0


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def cell(results: Results, target: str, scenario: str, connections: int) -> dict[str, Any] | None:
    """Median over rounds of one (target, scenario, connections) load cell."""
    rows = [
        r
        for r in results["loads"]
        if r["target"] == target and r["scenario"] == scenario and r["connections"] == connections
    ]
    if not rows:
        return None
    keys = (
        "rps",
        "p50_us",
        "p99_us",
        "server_cpu_pct",
        "mock_cpu_pct",
        "generator_core_pct",
        "other_cpu_pct",
        "steal_pct",
        "redis_cpu_pct",
    )
    out: dict[str, Any] = {k: _median(r.get(k, 0.0) for r in rows) for k in keys}
    # The server's CPU per request (us): % of a core / req/s * 1e4.
    out["cpu_us_per_request"] = _median(
        1e4 * r["server_cpu_pct"] / r["rps"] for r in rows if r["rps"]
    )
    out["errors"] = sum(r["errors"] for r in rows)
    out["disturbed"] = sum(bool(r.get("disturbed")) for r in rows)
    out["rounds"] = len(rows)
    return out


def _get(row: dict[str, Any] | None, key: str) -> float | None:
    return None if row is None else float(row[key])


def _probe(results: Results, target: str, key: str) -> float | None:
    return _median(p[key] for p in results["probes"] if p["target"] == target)


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


# The two store layouts (targets spendgate-local and spendgate-redis), compared when both ran.
_LAYOUTS = ("spendgate-local", "spendgate-redis")


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def summarize(results: Results) -> dict[str, Any]:
    """Per-target figures and spendgate's ratios, as plain numbers (ms, MB, s, ratios)."""
    targets: list[str] = results["meta"]["targets"]
    per: dict[str, dict[str, float | None]] = {}
    direct1 = cell(results, "direct", "chat", 1)
    for t in targets:
        one = cell(results, t, "chat", 1)
        starts = [s for s in results["starts"] if s["target"] == t]
        rss = [s["rss_bytes"] for s in starts if s["rss_bytes"] is not None]
        per[t] = {
            "p50_1conn_ms": _ms(_get(one, "p50_us")),
            "p99_1conn_ms": _ms(_get(one, "p99_us")),
            "added_p50_ms": _ms(_minus(_get(one, "p50_us"), _get(direct1, "p50_us"))),
            "added_p99_ms": _ms(_minus(_get(one, "p99_us"), _get(direct1, "p99_us"))),
            "ttfb_p50_ms": _ms(_probe(results, t, "ttfb_p50_us")),
            "ttfb_p99_ms": _ms(_probe(results, t, "ttfb_p99_us")),
            "ttfb_added_p50_ms": _ms(
                _minus(_probe(results, t, "ttfb_p50_us"), _probe(results, "direct", "ttfb_p50_us"))
            ),
            "ttfb_added_p99_ms": _ms(
                _minus(_probe(results, t, "ttfb_p99_us"), _probe(results, "direct", "ttfb_p99_us"))
            ),
            "rss_mb": max(rss) / 2**20 if rss else None,
            "start_s": _median(s["startup_s"] for s in starts),
        }
    ratios: dict[str, dict[str, float | None]] = {}
    for scenario in results["meta"]["scenarios"]:
        for c in results["meta"]["connections"]:
            sg, bare, lite = (
                cell(results, t, scenario, c) for t in ("spendgate", "bare", "litellm")
            )
            w2 = cell(results, "spendgate-w2", scenario, c)
            local, redis = (cell(results, t, scenario, c) for t in _LAYOUTS)
            ratios[f"{scenario}@{c}"] = {
                "spendgate/bare": _ratio(_get(sg, "rps"), _get(bare, "rps")),
                "spendgate/litellm": _ratio(_get(sg, "rps"), _get(lite, "rps")),
                "spendgate-w2/spendgate": _ratio(_get(w2, "rps"), _get(sg, "rps")),
                "local/redis": _ratio(_get(local, "rps"), _get(redis, "rps")),
            }
    return {"targets": per, "ratios": ratios}


def _ms(us: float | None) -> float | None:
    return None if us is None else us / 1e3


def _fmt(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def throughput_table(results: Results) -> str:
    """req/s (p50 / p99 ms under load) per scenario and connection count, median of rounds."""
    targets: list[str] = results["meta"]["targets"]
    summary = summarize(results)
    header = ["scenario", "conns", *targets]
    if "spendgate" in targets:
        header += [f"spendgate/{t}" for t in ("bare", "litellm") if t in targets]
        header += ["2 workers / 1"] if "spendgate-w2" in targets else []
    layouts = all(t in targets for t in _LAYOUTS)
    header += ["local / redis"] if layouts else []
    rows = []
    for scenario in results["meta"]["scenarios"]:
        for c in results["meta"]["connections"]:
            row = [scenario, str(c)]
            for t in targets:
                m = cell(results, t, scenario, c)
                if m is None:
                    row.append("n/a")
                    continue
                text = f"{m['rps']:,.0f} ({m['p50_us'] / 1e3:.2f} / {m['p99_us'] / 1e3:.2f})"
                text += " †" if m["disturbed"] else ""
                row.append(text + (f" **{m['errors']} errors**" if m["errors"] else ""))
            for t in ("bare", "litellm"):
                if "spendgate" in targets and t in targets:
                    ratio = summary["ratios"][f"{scenario}@{c}"][f"spendgate/{t}"]
                    row.append(_fmt(ratio, ".2f" if t == "bare" else ".1f", "x"))
            if "spendgate" in targets and "spendgate-w2" in targets:
                ratio = summary["ratios"][f"{scenario}@{c}"]["spendgate-w2/spendgate"]
                row.append(_fmt(ratio, ".2f", "x"))
            if layouts:
                row.append(_fmt(summary["ratios"][f"{scenario}@{c}"]["local/redis"], ".2f", "x"))
            rows.append(row)
    return _table(header, rows)


def cpu_table(results: Results) -> str:
    """Per cell: the server's CPU % (alone on its core), the mock's CPU % and how busy the
    generator's core was (mock + wrk share it). A server well below 100 % while that core is
    near 100 % was not the bottleneck: its req/s then understates what it could do. "+N other"
    is CPU that something else on the machine took on the server's core during the cell."""
    targets: list[str] = results["meta"]["targets"]
    rows = []
    for scenario in results["meta"]["scenarios"]:
        for c in results["meta"]["connections"]:
            row = [scenario, str(c)]
            for t in targets:
                m = cell(results, t, scenario, c)
                if m is None:
                    row.append("n/a")
                    continue
                gen = m.get("generator_core_pct")
                tail = "" if gen is None else f" / {gen:.0f}"
                server = "-" if t == "direct" else f"{m['server_cpu_pct']:.0f}"
                other, steal = m.get("other_cpu_pct"), m.get("steal_pct")
                noise = f" (+{other:.0f} other)" if other is not None and other > 5 else ""
                noise += f" ({steal:.0f} % stolen)" if steal is not None and steal >= 1 else ""
                row.append(f"{server} / {m['mock_cpu_pct']:.0f}{tail}{noise}")
            rows.append(row)
    return _table(["scenario", "conns", *targets], rows)


def target_table(results: Results) -> str:
    summary = summarize(results)["targets"]
    header = [
        "target",
        "1 conn p50 / p99 ms",
        "added p50 / p99 ms",
        "stream TTFB p50 / p99 ms",
        "TTFB added p50 / p99 ms",
        "RSS after load MB",
        "start-up s",
    ]
    rows = []
    for t, s in summary.items():
        rows.append(
            [
                t,
                f"{_fmt(s['p50_1conn_ms'])} / {_fmt(s['p99_1conn_ms'])}",
                "-"
                if t == "direct"
                else f"{_fmt(s['added_p50_ms'], '+.2f')} / {_fmt(s['added_p99_ms'], '+.2f')}",
                f"{_fmt(s['ttfb_p50_ms'])} / {_fmt(s['ttfb_p99_ms'])}",
                "-"
                if t == "direct"
                else f"{_fmt(s['ttfb_added_p50_ms'], '+.2f')} / "
                f"{_fmt(s['ttfb_added_p99_ms'], '+.2f')}",
                _fmt(s["rss_mb"], ".0f") + (" (mock)" if t == "direct" else ""),
                "-" if t == "direct" else _fmt(s["start_s"], ".2f"),
            ]
        )
    return _table(header, rows)


def checks(results: Results) -> list[tuple[str, str, str, bool | None]]:
    """(target, measured, goal, met?) for spendgate against the design's targets; None when a
    figure is missing (its target not run)."""
    summary = summarize(results)
    sg = summary["targets"].get("spendgate")
    if sg is None:
        return []
    meta = results["meta"]
    plain = [s for s in meta["scenarios"] if s != "cache_hit"]
    out: list[tuple[str, str, str, bool | None]] = []

    def worst(kind: str) -> tuple[float | None, str]:
        cells = [
            (summary["ratios"][f"{s}@{c}"][kind], f"{s}@{c}")
            for s in plain
            for c in meta["connections"]
        ]
        known = [(v, name) for v, name in cells if v is not None]
        return min(known) if known else (None, "")

    share, where = worst("spendgate/bare")
    out.append(
        (
            "throughput vs bare proxy (worst cell)",
            f"{_fmt(share, '.0%')} ({where})" if share is not None else "n/a",
            f">= {MIN_SHARE_OF_BARE:.0%}",
            None if share is None else share >= MIN_SHARE_OF_BARE,
        )
    )
    times, where = worst("spendgate/litellm")
    out.append(
        (
            "throughput vs LiteLLM (worst cell)",
            f"{_fmt(times, '.1f')}x ({where})" if times is not None else "n/a",
            f">= {MIN_TIMES_LITELLM:.0f}x",
            None if times is None else times >= MIN_TIMES_LITELLM,
        )
    )
    for key, goal in (("added_p50_ms", MAX_ADDED_P50_MS), ("added_p99_ms", MAX_ADDED_P99_MS)):
        value = sg[key]
        label = "added latency " + key.split("_")[1] + ", 1 connection"
        out.append((label, _fmt(value, ".2f", " ms"), f"<= {goal} ms", _le(value, goal)))
    value = sg["ttfb_added_p50_ms"]
    out.append(
        (
            "stream first byte added (p50)",
            _fmt(value, ".2f", " ms"),
            f"<= {MAX_STREAM_TTFB_ADDED_MS} ms",
            _le(value, MAX_STREAM_TTFB_ADDED_MS),
        )
    )
    if "cache_hit" in meta["scenarios"] and "bare" in meta["targets"]:
        for c in meta["connections"]:
            sgc, bare = (
                cell(results, "spendgate", "cache_hit", c),
                cell(results, "bare", "cache_hit", c),
            )
            ok = None if sgc is None or bare is None else sgc["rps"] > bare["rps"]
            measured = (
                "n/a" if sgc is None or bare is None else f"{sgc['rps']:,.0f} vs {bare['rps']:,.0f}"
            )
            out.append((f"cache hit req/s > bare @{c}", measured, "> bare", ok))
    out.append(
        (
            "RSS after load",
            _fmt(sg["rss_mb"], ".0f", " MB"),
            f"<= {MAX_RSS_MB:.0f} MB",
            _le(sg["rss_mb"], MAX_RSS_MB),
        )
    )
    out.append(
        (
            "start to first served request",
            _fmt(sg["start_s"], ".2f", " s"),
            f"<= {MAX_START_S:.0f} s",
            _le(sg["start_s"], MAX_START_S),
        )
    )
    return out


def _le(value: float | None, goal: float) -> bool | None:
    return None if value is None else value <= goal


def checks_table(results: Results) -> str:
    mark = {True: "met", False: "**missed**", None: "not measured"}
    rows = [[what, measured, goal, mark[ok]] for what, measured, goal, ok in checks(results)]
    return _table(["spendgate target", "measured", "goal", ""], rows)


def layouts_table(results: Results) -> str:
    """spendgate on the local store against spendgate on Redis, per load cell: req/s, the
    gateway's CPU per request (its core's share divided by req/s, which other work on the
    machine moves less than req/s) and the store's processes' CPU (on the generator's core)."""
    rows = []
    for scenario in results["meta"]["scenarios"]:
        for c in dict.fromkeys([*results["meta"]["connections"], 1]):  # one client: a probe too
            local, redis = (cell(results, t, scenario, c) for t in _LAYOUTS)
            if local is None or redis is None:
                continue
            row = [scenario, str(c)]
            for m in (local, redis):
                us = m["cpu_us_per_request"]
                row.append(
                    f"{m['rps']:,.0f} / {_fmt(us, '.0f')} us / {m['redis_cpu_pct']:.0f} %"
                    + (" †" if m["disturbed"] else "")
                )
            row.append(_fmt(_ratio(local["rps"], redis["rps"]), ".2f", "x"))
            rows.append(row)
    header = ["scenario", "conns", "local: req/s / gateway CPU per request / store CPU"]
    return _table([*header, "redis: the same", "local / redis req/s"], rows)


def render(results: Results) -> str:
    """The whole report as markdown."""
    meta = results["meta"]
    parts = [
        f"generator: {meta['generator']}; {meta['rounds']} round(s) of {meta['duration_s']:g} s "
        f"per cell, medians; servers on core {meta['server_core']}, generator and mock on core "
        f"{meta['generator_core']}; spendgate at {meta.get('gateway_commit', '?')}, store "
        f"{meta.get('spendgate_store', 'memory://')}",
    ]
    if meta.get("skipped"):
        parts.append("skipped: " + "; ".join(f"{k}: {v}" for k, v in meta["skipped"].items()))
    parts += [
        "",
        "Throughput: req/s (p50 / p99 ms under load), median of rounds",
        "",
        throughput_table(results),
        "",
        f"CPU % during each cell: server (core {meta['server_core']}) / mock / whole core "
        f"{meta['generator_core']} (mock + generator)",
        "",
        cpu_table(results),
        "",
        "One client at a time (closed loop): chat p50 / p99 and streaming time to first byte",
        "",
        target_table(results),
    ]
    disturbed = [r for r in results["loads"] if r.get("disturbed")]
    if disturbed:
        parts += [
            "",
            f"† {len(disturbed)} of {len(results['loads'])} cell runs were disturbed by other "
            "work on the machine or the host's steal even after retries (see the CPU table's "
            '"other" and "stolen").',
        ]
    if all(t in meta["targets"] for t in _LAYOUTS):
        parts += ["", "Store layouts (medians of rounds)", "", layouts_table(results)]
    if "spendgate" in meta["targets"]:
        parts += ["", checks_table(results)]
    errors = [r for r in results["loads"] if r["errors"]] + [
        p for p in results["probes"] if p["errors"]
    ]
    if errors:
        parts += ["", "ERRORS:"]
        parts += [
            f"- round {e['round']} {e['target']} {e['scenario']}"
            f"@{e.get('connections', 1)}: {e['errors']} {e.get('error_detail', '')}"
            for e in errors
        ]
    return "\n".join(parts)


def error_count(results: Results) -> int:
    rows = results["loads"] + results["probes"]
    return sum(int(r["errors"]) for r in rows)


_LINE = re.compile(r":\d+\)$")


def profile_counts(raw: Path) -> tuple[int, Counter[str], Counter[str]]:
    """From py-spy's raw (collapsed) stacks: total samples, and per function (name and file,
    line numbers dropped) its self samples and its total (inclusive) samples."""
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = [_LINE.sub(")", f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith(("thread ", "process "))]
        if not frames:
            continue
        own[frames[-1]] += n
        for frame in set(frames):
            anywhere[frame] += n
    return samples, own, anywhere


def profile_tables(raw: Path, top: int = 20) -> str:
    """The hottest functions by self time, then by total time, as markdown."""
    samples, own, anywhere = profile_counts(raw)
    if not samples:
        return "no samples"
    by_self = [
        [name, f"{n / samples:.1%}", f"{anywhere[name] / samples:.1%}"]
        for name, n in own.most_common(top)
    ]
    by_total = [
        [name, f"{n / samples:.1%}", f"{own[name] / samples:.1%}"]
        for name, n in anywhere.most_common(top)
    ]
    return "\n".join(
        [
            f"{samples} samples (idle time in the event loop's poll excluded)",
            "",
            "By self time:",
            "",
            _table(["function (file)", "self", "total"], by_self),
            "",
            "By total time:",
            "",
            _table(["function (file)", "total", "self"], by_total),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """`python loadtests/report.py RESULTS.json`: a saved run's report, as the run printed it."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("results", type=Path, help="a run's JSON (loadtests/results/*.json)")
    args = parser.parse_args(argv)
    print(render(json.loads(args.results.read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
