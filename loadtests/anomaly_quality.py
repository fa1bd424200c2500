"""How well anomaly detection does on synthetic histories (tests/analytics/synthetic.py: weeks of
5-minute buckets with daily and weekly seasonality and noise, from seeded RNGs).

    .venv/bin/python loadtests/anomaly_quality.py [--seeds 5] [--weeks 4]

- false alerts: anomalies opened on normal histories, per team-week (teams of three sizes,
  every baseline mode from the cold start on);
- injected anomalies (a runaway key, a new key, a dearer model, a surge, longer prompts, a cache
  that stops hitting, cascades escalating, a drop to zero), each at two sizes and on a weekday
  afternoon of the last week: detected or not, latency from the spike's start to its alert (in
  buckets, and in minutes counting the 30 s grace) and from the bucket in which its true excess
  (over the model's mean) reached the minimum dollar impact, and whether its true cause is
  ranked first;
- the detector's CPU per bucket per team (pure evaluation; reading Redis aside).

Default config (`AnomaliesConfig()`): z 3, $5 minimum impact, 5-minute buckets.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.analytics.series import SeriesHistory
from gateway.config.model import AnomaliesConfig
from tests.analytics.synthetic import (
    BUCKET_S,
    CHEAP,
    DEAR,
    FIRST,
    WEEK,
    Injection,
    Team,
    buckets,
    mean_cost,
    replay,
    weekday_afternoon,
)

CONFIG = AnomaliesConfig()  # replay's
GRACE_S = 30
SIZES = {"small": 80, "medium": 800, "large": 8000}
KEY, NEW_KEY = "key_000000000003", "key_00000000000f"


def injections(rate: float, start: int, scale: float) -> dict[str, Injection]:
    length = 24
    return {
        "runaway key": Injection("key", KEY, start, length, extra_key=(KEY, 3 * rate * scale)),
        "new key": Injection("key", NEW_KEY, start, length, extra_key=(NEW_KEY, rate * scale)),
        "dearer model": Injection(
            "route",
            "auto -> openai/gpt-4o",
            start,
            length,
            change={
                "routes": (
                    replace(CHEAP, weight=max(0.0, 0.75 - 0.25 * scale)),
                    replace(DEAR, weight=min(1.0, 0.25 + 0.25 * scale)),
                )
            },
        ),
        "traffic surge": Injection("volume", "", start, length, {"rate": rate * (1 + scale)}),
        "longer prompts": Injection("size", "", start, length, {"tokens": 900 * (1 + scale)}),
        "cache stops hitting": Injection("cache", "", start, length, {"hit_rate": 0.0}),
        "cascades escalating": Injection(
            "escalation", "", start, length, {"escalation": 0.03 + 0.25 * scale}
        ),
        "drop to zero": Injection("volume", "", start, length, {"rate": 0.0}),
    }


def due_bucket(team: Team, history: SeriesHistory, start: int, drop: bool) -> int | None:
    """Buckets after `start` at which the injection's true excess (its missing spend, for a
    drop, after `drop_buckets`) reached the minimum impact; None if it never did."""
    excess = 0.0
    for m in range(start, start + 24):
        excess += history.value("t||cost", m) - mean_cost(team, m)
        reached = -excess if drop else excess
        if reached >= CONFIG.defaults.min_impact_nano and (
            not drop or m - start + 1 >= CONFIG.drop_buckets
        ):
            return m - start
    return None


def false_alerts(seeds: int, weeks: int) -> tuple[float, float]:
    opened = team_weeks = 0
    cpu = 0.0
    evaluated = 0
    for name, rate in SIZES.items():
        for seed in range(seeds):
            team = Team(name, rate=rate)
            run = replay(team, FIRST, FIRST + weeks * WEEK, 100 + seed)
            found = [(n, a.kind, a.severity) for n, a in run.events("opened")]
            if found:
                print(f"  false alert: {name} seed {100 + seed}: {found}")
            opened += len(found)
            team_weeks += weeks
            cpu += run.cpu_s
            evaluated += run.evaluated
    print(
        f"false alerts: {opened} in {team_weeks} team-weeks of normal traffic "
        f"({opened / team_weeks:.3f} per team-week); detector CPU "
        f"{1000 * cpu / evaluated:.2f} ms per bucket per team"
    )
    return opened / team_weeks, cpu / evaluated


def injected(seeds: int, weeks: int) -> None:
    start = weekday_afternoon(weeks - 1, 2, 11)
    rows = []
    for size in ("medium", "large"):
        rate = SIZES[size]
        team = Team(size, rate=rate)
        for seed in range(seeds):
            prefix = list(buckets(team, FIRST, start - 12, 200 + seed))
            for scale in (1.0, 3.0):
                for name, injection in injections(rate, start, scale).items():
                    run = replay(
                        team, start - 12, start + 40, 300 + seed, (injection,), prefix=prefix
                    )
                    due = due_bucket(team, run.history, start, name == "drop to zero")
                    opened = run.events("opened")
                    wanted = "drop" if name == "drop to zero" else "spike"
                    hit = next(((n, a) for n, a in opened if a.kind == wanted), None)
                    early = [a for n, a in opened if n < start]
                    if hit is None:
                        rows.append((name, size, scale, None, False, len(early), due))
                        continue
                    n, anomaly = hit
                    top = anomaly.causes[0] if anomaly.causes else None
                    right = top is not None and (top.kind, top.value) == (
                        injection.cause,
                        injection.value,
                    )
                    rows.append((name, size, scale, n - start, right, len(early), due))
    print()
    print(
        "| injected | detected | buckets from its start (median / max) | buckets from reaching "
        "the minimum impact (median / max) | true cause first |"
    )
    print("|---|---|---|---|---|")
    for name in injections(1, start, 1):
        mine = [r for r in rows if r[0] == name]
        found = [r for r in mine if r[3] is not None]
        lat = [r[3] for r in found]
        lat_text = f"{statistics.median(lat):.0f} / {max(lat)}" if lat else "-"
        late = [r[3] - r[6] for r in found if r[6] is not None]
        late_text = f"{statistics.median(late):.0f} / {max(late)}" if late else "-"
        never = len([r for r in mine if r[6] is None])
        right = sum(r[4] for r in found)
        note = f" ({never} never reached it)" if never else ""
        print(
            f"| {name} | {len(found)}/{len(mine)}{note} | {lat_text} | {late_text} | "
            f"{right}/{len(found)} |"
        )
    found = [r for r in rows if r[3] is not None]
    spikes = [r for r in found if r[0] != "drop to zero"]
    lat = [r[3] for r in spikes]
    due = [r for r in rows if r[6] is not None]
    late = [r[3] - r[6] for r in due if r[3] is not None]
    print(
        f"\nof {len(due)} injections whose true excess reached the minimum impact, "
        f"{len(late)} were detected, {sum(x <= 1 for x in late)} within two buckets of it "
        f"(the bucket itself or the next), the latest {max(late)} after"
    )
    minutes = [(b + 1) * BUCKET_S / 60 + GRACE_S / 60 for b in lat]
    right = sum(r[4] for r in found)
    print(
        f"\nspikes: detected {len(spikes)}/{len([r for r in rows if r[0] != 'drop to zero'])}, "
        f"latency median {statistics.median(lat):.0f} buckets (max {max(lat)}), i.e. "
        f"{statistics.median(minutes):.1f} min from the spike's start to its alert "
        f"(max {max(minutes):.1f}); true cause first {right}/{len(found)} "
        f"({100 * right / len(found):.0f} %); alerts before an injection: "
        f"{sum(r[5] for r in rows)}"
    )
    misses = [r for r in rows if (r[3] is None and r[6] is not None) or (r[3] and not r[4])]
    for r in misses:
        print(f"  missed or misranked: {r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--weeks", type=int, default=4)
    args = parser.parse_args()
    false_alerts(args.seeds, args.weeks)
    injected(args.seeds, args.weeks)


if __name__ == "__main__":
    main()
