"""API version strings and their comparison (moby api/types/versions/compare.go).

The daemon speaks API 1.40 (Docker 19.03, the article's version) and accepts clients down to 1.12.
Versions compare numerically field by field; a missing or non-numeric field counts as 0, as in Go.
"""

DEFAULT_VERSION = "1.40"
MIN_VERSION = "1.12"


def _fields(v: str) -> list[int]:
    return [int(f) if f.isdigit() else 0 for f in v.split(".")]


def compare(v1: str, v2: str) -> int:
    """-1, 0 or 1 as v1 is older than, equal to or newer than v2."""
    a, b = _fields(v1), _fields(v2)
    width = max(len(a), len(b))
    a += [0] * (width - len(a))
    b += [0] * (width - len(b))
    return (a > b) - (a < b)


def less_than(v: str, other: str) -> bool:
    return compare(v, other) < 0


def greater_than(v: str, other: str) -> bool:
    return compare(v, other) > 0


def greater_than_or_equal_to(v: str, other: str) -> bool:
    return compare(v, other) >= 0
