"""95 % intervals of accuracies drawn as error bars (engine.metrics.Metrics.interval), the same in every plot."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pyqtgraph as pg

from engine.metrics import Metrics


def bar_data(xs: Sequence[float], metrics: Sequence[Metrics], key: str = "top1") -> dict:
    """Arguments of ErrorBarItem.setData: at each x the figure in %, down and up to its interval's ends.

    Points whose image count is unknown (older records) get no bar rather than a made-up one."""
    x, y, top, bottom = [], [], [], []
    for at, m in zip(xs, metrics):
        ci = m.interval(key)
        if ci is None or at is None:
            continue
        value = getattr(m, key)
        x.append(float(at))
        y.append(value * 100)
        top.append(max(0.0, ci[1] - value) * 100)
        bottom.append(max(0.0, value - ci[0]) * 100)
    return {"x": np.asarray(x, dtype=float), "y": np.asarray(y, dtype=float), "top": np.asarray(top, dtype=float),
            "bottom": np.asarray(bottom, dtype=float)}


def error_bars(colour, width: float = 1.2) -> pg.ErrorBarItem:
    """An empty error-bar item in a run's colour, fed later with `bar_data`."""
    return pg.ErrorBarItem(**bar_data([], []), beam=0.12, pen=pg.mkPen(colour, width=width))


def set_bars(item: pg.ErrorBarItem, xs: Sequence[float], metrics: Sequence[Metrics], key: str = "top1",
             beam: float | None = None) -> None:
    """Redraw `item` for these points (hidden when none has an interval)."""
    data = bar_data(xs, metrics, key)
    if beam is not None:
        data["beam"] = beam
    item.setData(**data)
    item.setVisible(len(data["x"]) > 0)  # an empty item would pull the autorange to (0, 0)
