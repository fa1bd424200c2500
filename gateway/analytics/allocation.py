"""Splitting an amount of nano-USD over teams so that the parts always sum to it exactly.

Largest-remainder (Hamilton) method: each team gets the floor of its exact share, and the nanos
left over go one each to the largest remainders, ties broken by team name. Integer arithmetic
only, so the result is exact and the same on every machine.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.config.model import AllocationMethod


def allocate(
    amount_nano: int,
    shares: Mapping[str, int],
    method: AllocationMethod = "proportional",
    weights: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Split `amount_nano` over the teams in `shares`.

    proportional: by `shares` (e.g. each team's direct spend); even: equally; fixed: by
    `weights` (a team without one gets nothing). Negative shares or weights count as zero; when
    every basis is zero the split is even, so the amount is always fully allocated. A negative
    amount (a credit) is split like its absolute value. Raises ValueError with no teams.
    """
    teams = sorted(shares)
    if not teams:
        if amount_nano == 0:
            return {}
        raise ValueError("cannot allocate a non-zero amount over no teams")
    if method == "even":
        basis = dict.fromkeys(teams, 1)
    elif method == "fixed":
        given = weights or {}
        basis = {t: max(int(given.get(t, 0)), 0) for t in teams}
    elif method == "proportional":
        basis = {t: max(int(shares[t]), 0) for t in teams}
    else:
        raise ValueError(f"unknown allocation method {method!r}")
    if not any(basis.values()):
        basis = dict.fromkeys(teams, 1)
    sign = -1 if amount_nano < 0 else 1
    parts = _largest_remainder(abs(amount_nano), basis, teams)
    return {t: sign * p for t, p in parts.items()}


def _largest_remainder(amount: int, basis: Mapping[str, int], teams: list[str]) -> dict[str, int]:
    total = sum(basis.values())
    parts: dict[str, int] = {}
    remainders: list[tuple[int, str]] = []
    for team in teams:
        whole, remainder = divmod(amount * basis[team], total)
        parts[team] = whole
        remainders.append((remainder, team))
    left = amount - sum(parts.values())  # < len(teams)
    # Largest remainder first; among equal remainders, alphabetical (deterministic).
    remainders.sort(key=lambda item: (-item[0], item[1]))
    for _, team in remainders[:left]:
        parts[team] += 1
    return parts
