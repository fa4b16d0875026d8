"""Durations as the command line and the HTTP service take them: '30d', '12h', '90m',
'45s', '2w' (text always with its unit: `--idle-ttl 30` could mean days; only 0 needs
none), or a JSON number of seconds; each within a range that means something."""

from __future__ import annotations

import math
import re

from lgprune.errors import InvalidArgumentError

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
LONGEST = 100 * 365 * 86400  # 100 years: longer than any checkpoint has existed
PATTERN = re.compile(r"\s*(\d{1,12}(?:\.\d{1,9})?)\s*([smhdw]?)\s*", re.ASCII)  # ASCII digits only


def show(seconds: float) -> str:
    """A duration in the largest unit that divides it: 86400 -> '1d', 90 -> '90s'."""
    if not math.isfinite(seconds):
        return "more than 100 years" if seconds > 0 else "less than -100 years"
    for unit in ("w", "d", "h", "m"):
        if seconds >= UNITS[unit] and seconds % UNITS[unit] == 0:
            return f"{seconds / UNITS[unit]:g}{unit}"
    return f"{seconds:g}s"


def parse_duration(value: str | float, *, name: str, least: float = 1.0) -> float:
    """Seconds in `value`, at least `least` (0 allowed when `least` is 0) and at most 100 years;
    else InvalidArgumentError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidArgumentError(f"{name} must be a duration like 30d, 12h, 90m or 45s, got {value!r}")
    if isinstance(value, int) and abs(value) > LONGEST:  # before float(): 10**400 overflows it
        seconds = math.inf if value > 0 else -math.inf
    elif isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = PATTERN.fullmatch(value)
        if match is None:
            shown = value if len(value) <= 40 else value[:40] + "..."
            raise InvalidArgumentError(f"{name}: {shown!r} is not a duration like 30d, 12h, 90m, 45s or 2w")
        if not match.group(2) and float(match.group(1)) != 0:
            raise InvalidArgumentError(
                f"{name}: {value.strip()!r} needs a unit: {value.strip()}d, {value.strip()}h, "
                f"{value.strip()}m or {value.strip()}s (w: weeks)"
            )
        seconds = float(match.group(1)) * UNITS[match.group(2) or "s"]
    if math.isnan(seconds) or (isinstance(value, float) and math.isinf(value)):
        raise InvalidArgumentError(f"{name}: {value!r} is not a duration like 30d, 12h, 90m or 45s")
    given = show(seconds) if isinstance(value, str) or not math.isfinite(seconds) else f"{value}s"
    if seconds > LONGEST:
        raise InvalidArgumentError(f"{name} must be at most {LONGEST // (365 * 86400)} years, got {given}")
    if seconds < least or seconds < 0:
        raise InvalidArgumentError(f"{name} must be at least {show(least)}, got {given}")
    return seconds


def elapsed(seconds: float) -> str:
    """A time taken, as a person reads it: '28 ms' below a second, else '1.4 s'."""
    return f"{seconds * 1000:.0f} ms" if seconds < 0.9995 else f"{seconds:.1f} s"
