"""Amounts of money for people to read (alerts, descriptions): rounded, never stored."""

from __future__ import annotations

import math


def usd_text(nano: float) -> str:
    """$1,234.57 from a dollar up; below it four significant digits ($0.004213, at most to
    the nano), so that the tiny amounts of a test or a small team still read as something."""
    sign = "-" if nano < 0 else ""
    usd = abs(nano) / 1e9
    if usd >= 0.995 or usd == 0:
        return f"{sign}${usd:,.2f}"
    decimals = min(max(2, 3 - math.floor(math.log10(usd))), 9)
    text = f"{usd:.{decimals}f}".rstrip("0")
    whole, _, fraction = text.partition(".")
    return f"{sign}${whole}.{fraction.ljust(2, '0')}"
