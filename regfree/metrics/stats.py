"""Uncertainty for flip rates: Wilson interval, McNemar's exact test and its paired counts.

Both are computed from counts; the binomial tail comes from ``scipy.special`` (imported on first
use), not ``scipy.stats``, whose import alone takes longer than a ``regfree report`` on 10M rows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

Z_95 = 1.959963984540054  # standard normal quantile at 0.975


def wilson_interval(successes: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default).

    Args:
        successes: number of events (e.g. negative flips).
        total: number of trials (samples); must be positive.
        z: normal quantile; the default gives a 95% interval.

    Returns:
        ``(low, high)``, clipped to ``[0, 1]``.

    Example:
        >>> low, high = wilson_interval(5, 100)
        >>> round(low, 4), round(high, 4)
        (0.0215, 0.1118)
    """
    if total <= 0:
        raise ValueError(f"total: must be positive, got {total}")
    if not 0 <= successes <= total:
        raise ValueError(f"successes: must be in [0, {total}], got {successes}")
    p = successes / total
    z2 = z * z
    denom = 1.0 + z2 / total
    center = (p + z2 / (2 * total)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / total + z2 / (4 * total * total))
    # At 0 and n the bounds are exactly 0 and 1; the formula can miss them by rounding.
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == total else min(1.0, center + half)
    return low, high


def mcnemar_exact_p(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value from the two discordant counts.

    Under the null hypothesis each discordant pair is a fair coin, so the p-value is
    ``min(1, 2 * P(X <= min(b, c)))`` with ``X ~ Binomial(b + c, 1/2)``; it is 1 when there are
    no discordant pairs. The binomial tail is the regularized incomplete beta function
    ``I_{1/2}(m - k, k + 1)`` (``scipy.special.betainc``), exact to a few ulps at any count
    without summing terms or allocating arrays. Like ``scipy.stats.binomtest(b, b + c)``, whose
    p-value this equals, outcomes on the far side whose probability is within a relative 1e-7
    of the observed one count as equally extreme (this only matters next to ``b == c``).

    Args:
        b: pairs where only the old model was right (negative flips).
        c: pairs where only the new model was right (positive flips).

    Returns:
        The p-value in ``[0, 1]``; tails below the smallest double (about 1e-308) are 0.0.

    Example:
        >>> round(mcnemar_exact_p(2, 10), 4)
        0.0386
    """
    for name, value in (("b", b), ("c", c)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name}: expected an integer count, got {type(value).__name__}")
        if value < 0:
            raise ValueError(f"{name}: counts must be >= 0, got {value}")
    m, k = int(b) + int(c), min(int(b), int(c))
    if 2 * k >= m:
        return 1.0
    from scipy.special import betainc  # scipy.stats alone would add 0.4 s to every report

    tail = float(betainc(float(m - k), float(k + 1), 0.5))
    ties = _near_ties(k, m)
    if ties:
        below = float(betainc(float(m - k + 1), float(k), 0.5)) if k else 0.0
        tail_pmf = tail - below if k else math.ldexp(1.0, -m)
        return min(1.0, 2.0 * tail + tail_pmf * ties)
    return min(1.0, 2.0 * tail)


def mcnemar_one_sided_p(b: int, c: int) -> float:
    """Exact one-sided McNemar p-value that ``b`` exceeds ``c`` by chance alone.

    ``P(X >= b)`` with ``X ~ Binomial(b + c, 1/2)``: for example ``b`` samples that flip in a
    later epoch and did not before, against ``c`` that flipped before and no longer do. 1 when
    ``b <= c``.

    Example:
        >>> round(mcnemar_one_sided_p(12, 2), 4), mcnemar_one_sided_p(0, 5)
        (0.0065, 1.0)
    """
    if b <= c:
        return 1.0
    from scipy.special import betainc

    return float(betainc(float(b), float(c + 1), 0.5))


_TIE = 1.0 + 1e-7  # scipy.stats.binomtest's relative tolerance for "as likely as observed"


def _near_ties(k: int, m: int) -> float:
    """Sum of ``pmf(k + j) / pmf(k)`` over the ``j >= 1`` with ratio <= 1 + 1e-7.

    The ratio first exceeds the tolerance after at most about ``2.5e-8 * m`` steps, so the loop
    is short even at 10^10 pairs, and it runs at all only within that distance of ``m / 2``.
    """
    ratio, total, j = 1.0, 0.0, 0
    while k + j + 1 < m - k:
        ratio *= (m - k - j) / (k + j + 1)
        if ratio > _TIE:
            break
        total += ratio
        j += 1
    return total


def discordant_pairs(events_a: Any, events_b: Any) -> tuple[int, int]:
    """Samples where only ``a`` has the event and where only ``b`` has it: McNemar's ``(b, c)``.

    Compares two models on the same samples, e.g. the negative flips of two candidate v2 models
    against the same v1 (is one's NFR significantly lower?) or their errors.

    Args:
        events_a: boolean per sample for model a (e.g. its negative-flip mask).
        events_b: boolean per sample for model b, same samples in the same order.

    Returns:
        ``(only_a, only_b)``; pass them to :func:`mcnemar_exact_p` for the p-value.

    Example:
        >>> plain = np.array([True, True, True, False, False])
        >>> distilled = np.array([False, False, True, False, True])
        >>> discordant_pairs(plain, distilled)
        (2, 1)
        >>> mcnemar_exact_p(*discordant_pairs(plain, distilled))
        1.0
    """
    a = _boolean_vector(events_a, "events_a")
    b = _boolean_vector(events_b, "events_b")
    if a.shape != b.shape:
        raise ValueError(f"events_a and events_b: must hold the same samples, got lengths "
                         f"{a.size} and {b.size}")
    return int(np.count_nonzero(a & ~b)), int(np.count_nonzero(b & ~a))


def _boolean_vector(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.dtype != np.bool_:
        raise ValueError(f"{name}: must be a 1-D boolean array, got {arr.dtype} with shape "
                         f"{arr.shape}")
    return arr
