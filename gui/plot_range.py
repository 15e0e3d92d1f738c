"""A plot view whose axis never zooms into rounding noise: when every point shares one value (38.33 and
38.333333333333450), pyqtgraph fitted the axis to a span of 1e-13 and labelled it "38.33333333333345…"."""
from __future__ import annotations

import pyqtgraph as pg

FLAT_SHARE = 1e-6  # a span below this share of the values' size is one value
FLAT_PAD = 0.05  # shown as that value ± 5 % of it (± 0.5 around zero)


def steady(span: list[float] | None) -> list[float] | None:
    """`span` (low, high) widened around its middle when it is one value up to rounding."""
    if span is None:
        return None
    low, high = span
    mid = (low + high) / 2
    if high - low > FLAT_SHARE * max(abs(low), abs(high)):
        return span
    pad = abs(mid) * FLAT_PAD or 0.5
    return [mid - pad, mid + pad]


class SteadyViewBox(pg.ViewBox):
    """A ViewBox whose auto-range gives a flat series a readable span around its value."""

    def childrenBounds(self, *args, **kwargs):  # noqa: N802 (pyqtgraph override)
        bounds = super().childrenBounds(*args, **kwargs)
        return [steady(b) for b in bounds]
