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


def check_numbers(values, what: str, low: float | None = None, high: float | None = None,
                  hint: str = "") -> tuple[float, ...]:
    """Finite numbers strictly between `low` and `high` (either may be None), as floats.

    One UserError names `what` and the first bad value; booleans are not numbers (TOML's true would
    otherwise pass as 1). Shared by command-line lists, plan files and the GUI's text fields.
    """
    import math

    from engine.errors import UserError

    out = []
    for v in values:
        if (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                or (low is not None and v <= low) or (high is not None and v >= high)):
            bounds = hint or " and ".join(p for p in (f"above {low:g}" if low is not None else "",
                                                      f"below {high:g}" if high is not None else "") if p)
            shown = repr(v) if len(repr(v)) <= 60 else repr(v)[:57] + "..."
            raise UserError(f"{what} must hold finite numbers{' ' + bounds if bounds else ''}, got {shown}")
        out.append(float(v))
    return tuple(out)


def parse_numbers(text: str, what: str, low: float | None = None, high: float | None = None) -> tuple[float, ...]:
    """Numbers typed as text, separated by commas or semicolons; empty parts are skipped."""
    from engine.errors import UserError

    values = []
    for part in text.replace(";", ",").split(","):
        if part.strip():
            try:
                values.append(float(part))
            except ValueError:
                raise UserError(f"{what}: {part.strip()!r} is not a number") from None
    return check_numbers(values, what, low, high)


def images_words(limit: int, total: int, split: str) -> str:
    """How many images of which split an accuracy was measured on: "on all 6 test images", "on 1,000 of
    10,000 test images (every class in proportion)" (the stratified sample of Dataset.sample)."""
    if limit >= total:
        return f"on all {total:,} {split} images" if total != 1 else f"on the only {split} image"
    return f"on {limit:,} of {total:,} {split} images (every class in proportion)"


def wilson_interval(rate: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion measured on `n` images, as (low, high) in [0, 1].

    Wilson rather than the normal approximation because it stays inside [0, 1] and is honest at
    0 % and 100 % and for the few dozen images of a quick evaluation. (0, 1) when nothing was measured.
    """
    import math

    if n <= 0:
        return 0.0, 1.0
    p = min(1.0, max(0.0, float(rate)))
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def difference_interval(a: float, a_ci: tuple[float, float], b: float, b_ci: tuple[float, float]
                        ) -> tuple[float, float]:
    """95 % interval of a − b from the two figures' own 95 % intervals (Newcombe's hybrid score method).

    It treats the two evaluations as independent; when both models saw the same images (as PruneLab's
    stratified sample ensures) the true interval is narrower, so this one errs on the side of "noise"."""
    import math

    d = a - b
    return (d - math.hypot(a - a_ci[0], b_ci[1] - b), d + math.hypot(a_ci[1] - a, b - b_ci[0]))


def intervals_overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """True when two intervals share a point: the figures are tied within their noise."""
    return a[0] <= b[1] and b[0] <= a[1]
