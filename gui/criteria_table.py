"""The Experiment tab's criteria editor: one row per criterion, weights and limits editable, name and metric not."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHeaderView, QTableWidget, QTableWidgetItem, QWidget

from engine.errors import UserError
from engine.experiments import METRICS, Criterion

# two-line headers and the unit instead of the metric's key: all six columns fit the Experiment panel
CRITERIA_COLUMNS = ("criterion", "unit", "weight", "max\ndrop", "max\nvalue", "min\nspeed-up")


class CriteriaTable(QTableWidget):
    """Criteria as a table; `criteria()` reads the edits back (its itemChanged tells the owner to re-rank)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, len(CRITERIA_COLUMNS), parent)
        self._criteria_meta: list[Criterion] = []  # what the edits do not change: name, metric, direction, unit
        self.setHorizontalHeaderLabels(CRITERIA_COLUMNS)
        self.verticalHeader().setVisible(False)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.horizontalHeader().setSectionResizeMode(len(CRITERIA_COLUMNS) - 1, QHeaderView.ResizeMode.Stretch)
        self.setToolTip("Weight 0: shown, not scored. Max drop: points lost against the original "
                        "(higher-is-better metrics). Max value: an absolute limit in the unit shown. "
                        "Min speed-up: at least N× lower than the original.")

    def set_criteria(self, criteria) -> None:
        """Fill the editor (without announcing each cell as an edit)."""
        self.blockSignals(True)
        self.setRowCount(0)
        self._criteria_meta = list(criteria)
        for c in criteria:
            r = self.rowCount()
            self.insertRow(r)
            values = (c.name, f"{c.unit} {'↑' if c.direction == 'max' else '↓'}", f"{c.weight:g}",
                      "" if c.max_drop is None else f"{c.max_drop:g}",
                      "" if c.max_value is None else f"{c.max_value:g}",
                      "" if c.min_speedup is None else f"{c.min_speedup:g}")
            for col, text in enumerate(values):
                item = QTableWidgetItem(text)
                if col < 2:
                    item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
                    item.setToolTip(f"{METRICS[c.metric].label} ({c.metric}, {c.unit}): "
                                    f"{'higher' if c.direction == 'max' else 'lower'} is better")
                self.setItem(r, col, item)
        self.blockSignals(False)

    def criteria(self) -> tuple[Criterion, ...]:
        """The criteria as edited (raises UserError naming the bad cell)."""
        out = []
        for r, base in enumerate(self._criteria_meta):
            def number(col: int, what: str):
                text = (self.item(r, col).text() if self.item(r, col) else "").strip()
                if not text:
                    return None
                try:
                    return float(text)
                except ValueError:
                    raise UserError(f"{base.name}: {what} must be a number, got {text!r}") from None
            weight = number(2, "weight")
            out.append(Criterion(base.name, base.metric, base.direction, base.unit,
                                 0.0 if weight is None else weight, number(3, "max drop"), number(4, "max value"),
                                 base.min_value, number(5, "min speed-up")))
        return tuple(out)
