"""Query parameters of the REST API, parsed with errors that name the parameter (400)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

__all__ = ["parse_since"]


def _seconds(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse_since(value: str | None, parameter: str = "since") -> float | None:
    """Epoch seconds from ``value``: a number of seconds, or an ISO 8601 time (UTC unless
    it carries an offset); ValueError naming ``parameter`` when it is neither."""
    if value is None or value.strip() == "":
        return None
    text = value.strip()
    problem = ValueError(
        f"query parameter {parameter!r}: got {value!r}; expected epoch seconds "
        "(e.g. 1718000000) or an ISO 8601 time (e.g. 2024-06-10T08:00:00Z)"
    )
    seconds = _seconds(text)
    if seconds is not None:
        if not math.isfinite(seconds):
            raise problem
        return seconds
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise problem from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
