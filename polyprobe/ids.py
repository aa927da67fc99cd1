"""Example id ranges as users write them on the command line (`1500-1999`, inclusive)."""

from __future__ import annotations


def parse_id_range(spec: str) -> range:
    """'1500-1999' -> the ids 1500..1999 inclusive; a single number is a one-id range."""
    low, sep, high = spec.strip().partition("-")
    try:
        first = int(low)
        last = int(high) if sep else first
    except ValueError:
        raise ValueError(f"id range {spec!r} must look like 1500-1999") from None
    if first < 0 or last < first:
        raise ValueError(f"id range {spec!r} must be ascending and non-negative")
    return range(first, last + 1)
