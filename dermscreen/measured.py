"""How a measured value is written in reports, model cards and the admin pages: three decimals,
``n/a`` where nothing was measured, and its 95% interval as ``0.772-0.866``."""

from __future__ import annotations


def span(interval) -> str:
    """An interval: ``0.772-0.866``."""
    return f"{interval[0]:.3f}-{interval[1]:.3f}"


def fmt(value, interval=None) -> str:
    """A metric: three decimals, ``n/a`` for None or nan, with its interval in parentheses when
    one is given."""
    if value is None or value != value:
        return "n/a"
    return f"{value:.3f}" + (f" ({span(interval)})" if interval else "")
