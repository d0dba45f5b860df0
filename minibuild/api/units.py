"""Human-readable sizes and durations (docker/go-units size.go, duration.go), as docker prints them."""

import re

_DECIMAL_ABBRS = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")


def _go_g(value: float, precision: int) -> str:
    # Go's %.Ng and Python's %.Ng agree: shortest of %e/%f, trailing zeros dropped.
    return f"{value:.{precision}g}"


def human_size_with_precision(size: float, precision: int) -> str:
    """HumanSizeWithPrecision: decimal units (1000), e.g. `2.048kB`, `1.98MB`."""
    i = 0
    while size >= 1000.0 and i < len(_DECIMAL_ABBRS) - 1:
        size /= 1000.0
        i += 1
    return _go_g(size, precision) + _DECIMAL_ABBRS[i]


def human_size(size: float) -> str:
    """HumanSize: four significant digits."""
    return human_size_with_precision(size, 4)


def human_duration(seconds: float) -> str:
    """HumanDuration: `Less than a second`, `About a minute`, `3 hours` (docker images' CREATED)."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


_RAM_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}
_RAM_RE = re.compile(r"^(\d+(?:\.\d+)?) ?([kKmMgGtTpP])?[iI]?[bB]?$")


def ram_in_bytes(text: str) -> int:
    """RAMInBytes: `512`, `64m`, `1.5GB`, `10KiB` -> bytes (binary units, as `--keep-storage` takes)."""
    match = _RAM_RE.match(text.strip())
    if not match:
        raise ValueError(f"invalid size: '{text}'")
    return int(float(match.group(1)) * _RAM_UNITS[(match.group(2) or "").lower()])
