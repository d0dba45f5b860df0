"""Human-readable sizes (docker/go-units size.go), as `docker build` and `docker images` print them."""

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
