"""The selected run's figures per class: recall against the model it started from, and its confusion matrix
(the HTML report's two views of the same figures, engine.metrics.Metrics.per_class and .confusion)."""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QHeaderView, QLabel, QTableWidget, QTableWidgetItem, QTabWidget, QVBoxLayout, QWidget

from engine.metrics import Metrics, interval_words
from engine.report.svg import MAX_MATRIX_CLASSES, confusion_rgb

RECALL_DROP_MARK = 0.10  # a class that lost this much recall is marked in the table


def _item(text: str, tip: str = "") -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
    if tip:
        item.setToolTip(tip)
    return item


class _NumericItem(QTableWidgetItem):
    """Sorts by the number behind its text."""

    def __lt__(self, other: QTableWidgetItem) -> bool:
        a, b = self.data(Qt.ItemDataRole.UserRole), other.data(Qt.ItemDataRole.UserRole)
        return (a, self.text()) < (b, other.text()) if a is not None and b is not None else super().__lt__(other)


class ClassView(QWidget):
    """Per-class recall (with the model the run started from beside it) and the confusion matrix of one run."""

    HEADERS = ("class", "images", "recall", "recall before", "Δ pt", "precision", "F1")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.caption = QLabel("Select a run to see its figures per class.")
        self.caption.setWordWrap(True)
        self.caption.setContentsMargins(6, 2, 6, 2)
        layout.addWidget(self.caption)
        self.tabs = QTabWidget()
        layout.addWidget(self.tabs)
        self.table = QTableWidget(0, len(self.HEADERS))
        self.table.setHorizontalHeaderLabels(self.HEADERS)
        self.table.verticalHeader().setVisible(False)
        self.table.setSortingEnabled(True)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.setToolTip("Recall per class: the share of that class's evaluated images the model got right, "
                              "after the run and before it (the model it started from), on the same images")
        self.matrix = QTableWidget(0, 0)
        self.matrix.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.matrix.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.matrix.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.matrix.setToolTip("Rows: true class; columns: predicted class; counts of evaluated images. Blue: right, "
                               "red: confused")
        self.tabs.addTab(self.table, "Recall per class")
        self.tabs.addTab(self.matrix, "Confusion matrix")

    def clear(self) -> None:
        """No run selected."""
        self.caption.setText("Select a run to see its figures per class.")
        self.table.setRowCount(0)
        self.matrix.setRowCount(0)
        self.matrix.setColumnCount(0)

    def show_run(self, label: str, after: Metrics, before: Metrics | None = None) -> None:
        """Show `after` (the run `label`), with `before`'s recall beside it when it was measured on the same classes."""
        pc = after.per_class or {}
        recall = pc.get("recall") or []
        if not recall:
            self.clear()
            self.caption.setText(f"{label}: no per-class figures were recorded.")
            return
        names = list(pc.get("names") or [str(i) for i in range(len(recall))])
        before_recall = (before.per_class or {}).get("recall") if before is not None else None
        if before_recall is not None and len(before_recall) != len(recall):
            before_recall = None
        ci = after.interval("top1")
        where = f" ({interval_words(ci, after.samples)})" if ci else ""
        self.caption.setText(f"{label}: top-1 {after.top1 * 100:.2f} %{where}, per class on the same images as "
                             "the model it started from")
        self._fill_table(names, pc, before_recall)
        self._fill_matrix(names, after.confusion)

    def _fill_table(self, names: list[str], pc: dict, before_recall: list | None) -> None:
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(names))
        support = pc.get("support") or [0] * len(names)
        for row, name in enumerate(names):
            r = pc["recall"][row]
            b = before_recall[row] if before_recall is not None else None
            cells = [self._number(name, row), self._number(f"{support[row]}", support[row]),
                     self._number(f"{r * 100:.1f} %", r),
                     self._number(f"{b * 100:.1f} %" if b is not None else "–", b if b is not None else -1.0),
                     self._number(f"{(r - b) * 100:+.1f}" if b is not None else "–",
                                  (r - b) if b is not None else 0.0),
                     self._number(f"{pc['precision'][row] * 100:.1f} %", pc["precision"][row]),
                     self._number(f"{pc['f1'][row] * 100:.1f} %", pc["f1"][row])]
            if not support[row]:
                cells[2].setText("no image")
                cells[2].setToolTip("The evaluation held no image of this class: its recall is not measured")
            elif b is not None and b - r >= RECALL_DROP_MARK:
                cells[4].setBackground(QColor(214, 39, 40, 90))
            cells[0].setTextAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
            for col, item in enumerate(cells):
                self.table.setItem(row, col, item)
        self.table.setSortingEnabled(True)
        self.table.sortItems(0, Qt.SortOrder.AscendingOrder)  # the dataset's class order (the class index)

    @staticmethod
    def _number(text: str, value: float) -> QTableWidgetItem:
        item = _NumericItem(text)
        item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
        item.setData(Qt.ItemDataRole.UserRole, float(value))
        item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return item

    def _fill_matrix(self, names: list[str], confusion: np.ndarray | None) -> None:
        if confusion is None or len(names) > MAX_MATRIX_CLASSES:
            self.matrix.setRowCount(0)
            self.matrix.setColumnCount(1)
            self.matrix.setHorizontalHeaderLabels([f"{len(names)} classes: too many cells to read here; the per-class "
                                                   "table and the HTML report have them" if confusion is not None
                                                   else "no confusion matrix was recorded"])
            return
        m = np.asarray(confusion, dtype=np.int64)
        n = len(names)
        self.matrix.setRowCount(n)
        self.matrix.setColumnCount(n)
        self.matrix.setHorizontalHeaderLabels(names)
        self.matrix.setVerticalHeaderLabels(names)
        totals = m.sum(1)
        for i in range(n):
            for j in range(n):
                share = m[i, j] / totals[i] if totals[i] else 0.0
                item = _item(str(int(m[i, j])),
                             f"true {names[i]}, predicted {names[j]}: {int(m[i, j])} of {int(totals[i])} images")
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                item.setBackground(QColor(*confusion_rgb(share, i == j)))
                dark = i == j and share > 0.6  # a deep blue cell: white text
                item.setForeground(QColor(255, 255, 255) if dark else QColor(0, 0, 0))  # fills ignore the palette
                self.matrix.setItem(i, j, item)

    def matrix_counts(self) -> np.ndarray:
        """The counts shown in the matrix (for tests)."""
        n = self.matrix.rowCount()
        return np.array([[int(self.matrix.item(i, j).text()) for j in range(n)] for i in range(n)], dtype=np.int64)

    def recall_column(self) -> dict[str, str]:
        """Class name -> the recall text shown (for tests)."""
        return {self.table.item(r, 0).text(): self.table.item(r, 2).text() for r in range(self.table.rowCount())}
