"""Daily spend forecasts: exponential smoothing (Holt-Winters as a state space model, ETS with
additive errors) with a weekly season, 80 % and 95 % prediction intervals, and a backtest that
says how far to trust them. Pure Python: a series is at most 400 days, and a fit takes
milliseconds, so numpy would buy little for its 20 MB of install.

Candidates, as R's `ets` chooses among them: no trend, a linear trend or a damped one, each
with or without a weekly season (once three weeks of history exist), fitted by least squares
(Nelder-Mead over the smoothing parameters; initial states from the first weeks), each on the
spend itself and on its logarithm. Spend tends to grow by a percentage and to dip by a share
at weekends, which the log scale models as a straight trend and a fixed season; the likelihood
of the log models is taken back to dollars (the Jacobian) so that AICc compares all twelve.

Intervals come from the model's own forecast variance (Hyndman et al., *Forecasting with
Exponential Smoothing*, 2008, class 1 models): the h-step error is e(h) = eps(h) + sum of c(j)
eps(h-j), c(j) being the model's response at lead j to a unit error, which is computed by
running the forecast recursion on that impulse. On the log scale the intervals are lognormal;
a sum of days (a month's remainder) takes the days' covariance into account, and on the log
scale is approximated by a lognormal of the same mean and variance (Fenton-Wilkinson). Point
forecasts are medians.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

Trend = Literal["N", "A", "Ad"]  # none, additive, additive damped
SEASON = 7  # days: the weekly cycle of office-hours traffic
Z80 = 1.2815515655446004  # standard normal quantiles of the interval ends
Z95 = 1.959963984540054
MIN_DAYS = 7  # fewer complete days than this: no model, no forecast
SEASONAL_DAYS = 3 * SEASON  # a weekly season needs two weeks to start from and one to fit
TREND_DAYS = 10
_TRENDS: tuple[Trend, ...] = ("N", "A", "Ad")
_PHI_MIN, _PHI_SPAN = 0.8, 0.18  # damping in [0.8, 0.98], R's default bounds
_ITERATIONS = 120  # Nelder-Mead evaluations per model: more changed no forecast measured
_LOG_OFFSET = 0.05  # log(y + 5 % of the mean): days without spend stay finite


@dataclass(frozen=True, slots=True)
class Interval:
    """A forecast and its prediction intervals, in the unit of the series; never below 0. The
    forecast is the median of its distribution: as likely to be beaten as missed, and always
    inside the intervals (a lognormal's mean, with a wide spread, can lie far above both)."""

    median: float
    low80: float
    high80: float
    low95: float
    high95: float

    @classmethod
    def normal(cls, mean: float, variance: float) -> Interval:
        sd = math.sqrt(max(variance, 0.0))
        return cls(
            max(mean, 0.0),  # the median too
            max(mean - Z80 * sd, 0.0),
            max(mean + Z80 * sd, 0.0),
            max(mean - Z95 * sd, 0.0),
            max(mean + Z95 * sd, 0.0),
        )

    @classmethod
    def lognormal(cls, mu: float, variance: float, offset: float) -> Interval:
        """exp(N(mu, variance)) - offset."""
        sd = math.sqrt(max(variance, 0.0))

        def at(z: float) -> float:
            return max(_exp(mu + z * sd) - offset, 0.0)

        return cls(at(0.0), at(-Z80), at(Z80), at(-Z95), at(Z95))

    def plus(self, amount: float) -> Interval:
        """The interval shifted by a known amount (what is already spent)."""
        return Interval(
            self.median + amount,
            self.low80 + amount,
            self.high80 + amount,
            self.low95 + amount,
            self.high95 + amount,
        )

    def covers(self, actual: float, level: int) -> bool:
        low, high = (self.low80, self.high80) if level == 80 else (self.low95, self.high95)
        return low <= actual <= high


@dataclass(frozen=True, slots=True)
class Model:
    """A fitted model and its state after the last observation. The state is on the model's
    scale: the spend itself, or log(spend + offset) when `offset` is set."""

    trend: Trend
    seasonal: bool  # additive weekly season (a share of the day's spend on the log scale)
    offset: float | None  # None: fitted on the spend; else on log(spend + offset)
    alpha: float
    beta: float
    gamma: float
    phi: float
    level: float
    slope: float
    season: tuple[float, ...]  # the seasonal terms of the next SEASON days, in order
    sigma2: float  # variance of the one-step errors
    n: int  # days it was fitted on
    aicc: float  # comparable across scales (in dollars)

    @property
    def name(self) -> str:
        name = f"ETS(A,{self.trend},{'A' if self.seasonal else 'N'})"
        return name if self.offset is None else f"{name} of log spend"

    def forecast(self, horizon: int) -> list[Interval]:
        """Each of the next `horizon` days, with its own prediction intervals."""
        out, acc = [], 0.0
        for mu, c in zip(self._means(horizon), self.impulse(horizon), strict=True):
            acc += c * c
            out.append(self._interval(mu, self.sigma2 * acc))
        return out

    def total(self, weights: Sequence[float]) -> Interval:
        """The weighted sum of the next len(weights) days (a weight of 0.4 for what is left of
        today, 1 for each whole day after), with the interval of that sum: the days' errors are
        correlated through the state, so it is wider than the days' own intervals suggest."""
        horizon = len(weights)
        if not horizon:
            return Interval.normal(0.0, 0.0)
        mus, c = self._means(horizon), self.impulse(horizon)
        if self.offset is None:
            mean = sum(w * max(mu, 0.0) for w, mu in zip(weights, mus, strict=True))
            # A shock on day k reaches the sum through its own weight and its echo later on.
            variance = 0.0
            for k in range(horizon):
                echo = weights[k] + sum(weights[h] * c[h - k] for h in range(k + 1, horizon))
                variance += echo * echo
            return Interval.normal(mean, self.sigma2 * variance)
        return self._lognormal_total(weights, mus, c)

    def impulse(self, horizon: int) -> list[float]:
        """c(0) = 1, c(1) ... c(horizon-1): how a unit error today moves the forecast j days on."""
        # A unit error today changes today's seasonal term, which returns every SEASON days:
        # seen from tomorrow, it is the last of the next SEASON terms.
        season = (0.0,) * (SEASON - 1) + (self.gamma if self.seasonal else 0.0,)
        return [1.0, *_means(self.alpha, self.beta, season, self.phi, horizon - 1)][:horizon]

    def _means(self, horizon: int) -> list[float]:
        return _means(self.level, self.slope, self.season, self.phi, horizon)

    def _interval(self, mu: float, variance: float) -> Interval:
        if self.offset is None:
            return Interval.normal(mu, variance)
        return Interval.lognormal(mu, variance, self.offset)

    def _lognormal_total(
        self, weights: Sequence[float], mus: Sequence[float], c: Sequence[float]
    ) -> Interval:
        """Sum of w(h) (exp(Z(h)) - offset) with Z Gaussian: its exact mean and variance, then
        a lognormal with those two moments for the interval (Fenton-Wilkinson)."""
        assert self.offset is not None
        horizon = len(weights)
        variances, acc = [], 0.0
        for cj in c:
            acc += cj * cj
            variances.append(self.sigma2 * acc)
        # E[exp(Z(h))]: the mean of each day before the offset comes off.
        scale = [_exp(mu + v / 2) for mu, v in zip(mus, variances, strict=True)]
        shifted = sum(w * a for w, a in zip(weights, scale, strict=True))  # E[sum + offsets]
        # Cov(Z(h), Z(h+d)) = sigma2 * sum over j < h+1 of c(j) c(j+d): one running sum per lag.
        var = 0.0
        for d in range(horizon):
            running = 0.0
            for h in range(horizon - d):
                running += self.sigma2 * c[h] * c[h + d]
                term = weights[h] * weights[h + d] * scale[h] * scale[h + d] * math.expm1(running)
                var += term if d == 0 else 2 * term
        if shifted <= 0:
            return Interval.normal(0.0, 0.0)
        s2 = math.log1p(max(var, 0.0) / (shifted * shifted))
        total_offset = self.offset * sum(weights)
        return Interval.lognormal(math.log(shifted) - s2 / 2, s2, total_offset)


def fit(series: Sequence[float]) -> Model | None:
    """The candidate with the lowest AICc, or None with fewer than MIN_DAYS days."""
    n = len(series)
    if n < MIN_DAYS:
        return None
    y = [max(float(v), 0.0) for v in series]
    trends = _TRENDS if n >= TREND_DAYS else _TRENDS[:1]
    seasons = (False, True) if n >= SEASONAL_DAYS else (False,)
    scales: list[tuple[float | None, list[float], float]] = [(None, y, 0.0)]
    mean = sum(y) / n
    if mean > 0:
        offset = _LOG_OFFSET * mean
        z = [math.log(v + offset) for v in y]
        scales.append((offset, z, 2.0 * sum(z)))  # the Jacobian of the log, for AICc
    models = [
        _fit_one(values, trend, seasonal, offset, jacobian)
        for offset, values, jacobian in scales
        for trend in trends
        for seasonal in seasons
    ]
    return min(models, key=lambda m: m.aicc)


@dataclass(frozen=True, slots=True)
class Accuracy:
    """How the model did on history it had not seen: forecasts made from each day of the last
    `window_days` minus `horizon_days`, 1 to `horizon_days` ahead, against what happened."""

    mape_pct: float | None  # mean absolute percentage error over the days that had spend
    coverage80_pct: float  # share of the actual days inside their 80 % interval
    coverage95_pct: float
    points: int  # forecasts checked
    horizon_days: int
    window_days: int

    def to_dict(self) -> dict[str, object]:
        return {
            "mape_pct": None if self.mape_pct is None else round(self.mape_pct, 1),
            "coverage80_pct": round(self.coverage80_pct, 1),
            "coverage95_pct": round(self.coverage95_pct, 1),
            "points": self.points,
            "horizon_days": self.horizon_days,
            "window_days": self.window_days,
        }


def backtest(series: Sequence[float], horizon: int = 7, window: int = 28) -> Accuracy | None:
    """Rolling-origin evaluation over the last `window` days (shrunk to what the history
    allows, at least a week): a model is chosen and fitted on the days before the first origin
    only, then run over the rest with those parameters, forecasting `horizon` days from each
    day. None when the history cannot spare a week to test on."""
    n = len(series)
    window = min(window, n - horizon - SEASONAL_DAYS + 1)
    if window < SEASON:
        return None
    first_origin = n - window - horizon  # the last day the first forecast knows
    model = fit(series[: first_origin + 1])
    if model is None:
        return None
    y = [max(float(v), 0.0) for v in series]
    start = n - window
    hits80 = hits95 = points = 0
    errors: list[float] = []
    for origin, state in _states_after(model, y, first_origin):
        for h, interval in enumerate(state.forecast(horizon)):
            t = origin + 1 + h
            if not start <= t < n:
                continue
            actual = y[t]
            points += 1
            hits80 += interval.covers(actual, 80)
            hits95 += interval.covers(actual, 95)
            if actual > 0:
                errors.append(abs(actual - interval.median) / actual)
    return Accuracy(
        100.0 * sum(errors) / len(errors) if errors else None,
        100.0 * hits80 / points,
        100.0 * hits95 / points,
        points,
        horizon,
        window,
    )


def _states_after(model: Model, y: Sequence[float], first: int) -> list[tuple[int, Model]]:
    """(t, the model as it stood after day t) for t from `first` to the second-last day, its
    parameters kept: what it would have forecast from each of those days."""
    offset = model.offset
    values = y if offset is None else [math.log(v + offset) for v in y]
    level, slope, season = _initial(values[: model.n], model.trend, model.seasonal)
    alpha, beta, gamma, phi, seasonal = (
        model.alpha,
        model.beta,
        model.gamma,
        model.phi,
        model.seasonal,
    )
    out = []
    for t in range(len(values) - 1):
        i = t % SEASON
        error = values[t] - (level + phi * slope + season[i])
        level += phi * slope + alpha * error
        slope = phi * slope + beta * error
        if seasonal:
            season[i] += gamma * error
        if t >= first:
            ahead = tuple(season[(t + 1 + k) % SEASON] for k in range(SEASON))
            out.append((t, replace(model, level=level, slope=slope, season=ahead)))
    return out


def _means(
    level: float, slope: float, season: Sequence[float], phi: float, horizon: int
) -> list[float]:
    out = []
    damped, power = 0.0, 1.0
    for h in range(horizon):
        power *= phi
        damped += power
        out.append(level + damped * slope + season[h % SEASON])
    return out


def _initial(y: Sequence[float], trend: Trend, seasonal: bool) -> tuple[float, float, list[float]]:
    """Level and slope before day 0 and the seasonal terms of days 0..SEASON-1, from the first
    weeks: the weeks' means give level and slope, each weekday's mean deviation from its week's
    mean the seasonal terms."""
    m = SEASON
    if seasonal:
        weeks = min(len(y) // m, 3)
        means = [sum(y[w * m : (w + 1) * m]) / m for w in range(weeks)]
        season = [sum(y[w * m + i] - means[w] for w in range(weeks)) / weeks for i in range(m)]
        slope = (means[1] - means[0]) / m if trend != "N" else 0.0
        # The first week's mean is the level in its middle: step back to before day 0.
        return means[0] - slope * (m + 1) / 2, slope, season
    k = min(len(y), m)
    first = sum(y[:k]) / k
    slope = 0.0
    if trend != "N" and len(y) >= 2 * k:
        slope = (sum(y[k : 2 * k]) / k - first) / k
    return first - slope * (k + 1) / 2, slope, [0.0] * m


def _fit_one(
    y: list[float], trend: Trend, seasonal: bool, offset: float | None, jacobian: float
) -> Model:
    level0, slope0, season0 = _initial(y, trend, seasonal)

    def params(u: Sequence[float]) -> tuple[float, float, float, float]:
        alpha = _squash(u[0])
        beta = alpha * _squash(u[1]) if trend != "N" else 0.0
        gamma = (1.0 - alpha) * _squash(u[2]) if seasonal else 0.0
        phi = _PHI_MIN + _PHI_SPAN * _squash(u[3]) if trend == "Ad" else 1.0
        return alpha, beta, gamma, phi

    def sse(u: Sequence[float]) -> float:
        return _run(y, *params(u), level0, slope0, season0, seasonal)[0]

    # From moderate smoothing: alpha 0.3, beta 0.1 alpha, gamma 0.1 (1 - alpha), phi 0.95.
    free = (True, trend != "N", seasonal, trend == "Ad")
    alpha, beta, gamma, phi = params(_nelder_mead(sse, (-0.85, -2.2, -2.2, 1.4), free))
    total, level, slope, season = _run(
        y, alpha, beta, gamma, phi, level0, slope0, season0, seasonal
    )
    n = len(y)
    k = sum(free) + 1 + (trend != "N") + (SEASON - 1 if seasonal else 0)  # and initial states
    return Model(
        trend,
        seasonal,
        offset,
        alpha,
        beta,
        gamma,
        phi,
        level,
        slope,
        season,
        total / max(n - k, 1),
        n,
        _aicc(total, n, k) + jacobian,
    )


def _run(
    y: Sequence[float],
    alpha: float,
    beta: float,
    gamma: float,
    phi: float,
    level: float,
    slope: float,
    season0: Sequence[float],
    seasonal: bool,
) -> tuple[float, float, float, tuple[float, ...]]:
    """One pass of the model over `y`: the sum of squared one-step errors, and the state after
    the last day (level, slope, the seasonal terms of the next SEASON days)."""
    s = list(season0)
    total = 0.0
    m = SEASON
    i = 0
    for value in y:
        si = s[i]
        error = value - level - phi * slope - si
        total += error * error
        level += phi * slope + alpha * error
        slope = phi * slope + beta * error
        if seasonal:
            s[i] = si + gamma * error
        i = i + 1 if i < m - 1 else 0
    return total, level, slope, tuple(s[(i + k) % m] for k in range(m))


def _aicc(sse: float, n: int, k: int) -> float:
    """AICc of a Gaussian model with `k` estimated values (parameters, initial states) and its
    variance."""
    p = k + 1
    aic = n * math.log(max(sse, 1e-12) / n) + 2 * p
    return aic + (2 * p * (p + 1) / (n - p - 1) if n - p - 1 > 0 else math.inf)


def _squash(u: float) -> float:
    return 0.0 if u < -30.0 else 1.0 / (1.0 + math.exp(-u))


def _exp(x: float) -> float:
    return math.exp(min(x, 700.0))


def _nelder_mead(
    f: Callable[[Sequence[float]], float], start: Sequence[float], free: Sequence[bool]
) -> list[float]:
    """Minimize `f` over the coordinates marked `free` (the others stay at `start`)."""
    dims = [i for i, flag in enumerate(free) if flag]

    def value(x: Sequence[float]) -> float:
        p = list(start)
        for i, v in zip(dims, x, strict=True):
            p[i] = v
        return f(p)

    x0 = [start[i] for i in dims]
    simplex = [x0] + [[v + (j == d) for j, v in enumerate(x0)] for d in range(len(x0))]
    scores = [value(x) for x in simplex]
    evaluations = len(simplex)
    while evaluations < _ITERATIONS:
        order = sorted(range(len(simplex)), key=scores.__getitem__)
        simplex, scores = [simplex[i] for i in order], [scores[i] for i in order]
        if scores[-1] - scores[0] <= 1e-5 * (abs(scores[0]) + 1e-30):
            break
        worst = simplex[-1]
        centroid = [sum(x[d] for x in simplex[:-1]) / (len(simplex) - 1) for d in range(len(x0))]
        reflected = [c + (c - w) for c, w in zip(centroid, worst, strict=True)]
        r = value(reflected)
        evaluations += 1
        if r < scores[0]:
            expanded = [c + 2.0 * (c - w) for c, w in zip(centroid, worst, strict=True)]
            e = value(expanded)
            evaluations += 1
            simplex[-1], scores[-1] = (expanded, e) if e < r else (reflected, r)
        elif r < scores[-2]:
            simplex[-1], scores[-1] = reflected, r
        else:
            contracted = [c + 0.5 * (w - c) for c, w in zip(centroid, worst, strict=True)]
            k = value(contracted)
            evaluations += 1
            if k < scores[-1]:
                simplex[-1], scores[-1] = contracted, k
            else:  # shrink toward the best
                best = simplex[0]
                simplex = [best] + [
                    [b + 0.5 * (v - b) for b, v in zip(best, x, strict=True)] for x in simplex[1:]
                ]
                scores = [scores[0]] + [value(x) for x in simplex[1:]]
                evaluations += len(simplex) - 1
    best_x = simplex[min(range(len(simplex)), key=scores.__getitem__)]
    p = list(start)
    for i, v in zip(dims, best_x, strict=True):
        p[i] = v
    return p
