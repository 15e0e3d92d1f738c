"""Numbers for people: byte sizes and counts, as the CLI, the GUI and the report print them."""
from __future__ import annotations


def fmt_bytes(n: float) -> str:
    """Human-readable bytes."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


def fmt_count(n: float) -> str:
    """Compact count: 1.23 M, 45.6 k."""
    if n >= 1e9:
        return f"{n / 1e9:.2f} G"
    if n >= 1e6:
        return f"{n / 1e6:.2f} M"
    if n >= 1e3:
        return f"{n / 1e3:.1f} k"
    return str(int(n))
