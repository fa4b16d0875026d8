"""Durations as the command line and the HTTP service take them: '30d', '12h', '90m',
'45s', '2w', or a number of seconds; each within a range that means something."""

from __future__ import annotations

import math
import re

from lgprune.errors import InvalidArgumentError

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
LONGEST = 100 * 365 * 86400  # 100 years: longer than any checkpoint has existed
PATTERN = re.compile(r"\s*(\d{1,12}(?:\.\d{1,9})?)\s*([smhdw]?)\s*")


def show(seconds: float) -> str:
    """A duration in the largest unit that divides it: 86400 -> '1d', 90 -> '90s'."""
    for unit in ("w", "d", "h", "m"):
        if seconds >= UNITS[unit] and seconds % UNITS[unit] == 0:
            return f"{seconds / UNITS[unit]:g}{unit}"
    return f"{seconds:g}s"


def parse_duration(value: str | float, *, name: str, least: float = 1.0) -> float:
    """Seconds in `value`, at least `least` (0 allowed when `least` is 0) and at most 100 years;
    else InvalidArgumentError naming `name`."""
    if isinstance(value, bool):
        raise InvalidArgumentError(f"{name} must be a duration like 30d, 12h, 90m or 45s, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = PATTERN.fullmatch(value) if isinstance(value, str) else None
        if match is None:
            shown = value if not isinstance(value, str) or len(value) <= 40 else value[:40] + "..."
            raise InvalidArgumentError(f"{name}: {shown!r} is not a duration like 30d, 12h, 90m or 45s")
        seconds = float(match.group(1)) * UNITS[match.group(2) or "s"]
    if not math.isfinite(seconds) or seconds > LONGEST:
        raise InvalidArgumentError(f"{name} must be at most {LONGEST // (365 * 86400)} years")
    if seconds < least or seconds < 0:
        raise InvalidArgumentError(f"{name} must be at least {show(least)}, got {show(max(seconds, 0))}")
    return seconds
