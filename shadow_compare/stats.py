"""Statistics for the gates: how sure a regression rate is, given how much was compared."""

from __future__ import annotations

import math
from statistics import NormalDist

__all__ = ["wilson_upper"]


def wilson_upper(failures: int, trials: int, confidence: float = 0.95) -> float:
    """One-sided Wilson score upper bound of a rate observed as ``failures / trials``.

    With no trials nothing is known: the bound is 1.0, so "no traffic" can never pass a
    rate gate. Wilson is used rather than the normal approximation because it stays
    sensible at rates near zero with few trials, which is exactly the cut-over case.
    """
    if trials <= 0:
        return 1.0
    if not 0 <= failures <= trials:
        raise ValueError(f"failures ({failures}) must be between 0 and trials ({trials})")
    if not 0.5 < confidence < 1:
        raise ValueError("confidence must be between 0.5 and 1")
    z = NormalDist().inv_cdf(confidence)
    rate = failures / trials
    z2 = z * z
    centre = rate + z2 / (2 * trials)
    spread = z * math.sqrt(rate * (1 - rate) / trials + z2 / (4 * trials * trials))
    return min(1.0, (centre + spread) / (1 + z2 / trials))
