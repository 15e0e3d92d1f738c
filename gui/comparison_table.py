"""The Experiment tab's comparison table: the original, then every run in the ranking's order, the best one
in bold green and the ones breaking a constraint in red."""
from __future__ import annotations

from PySide6.QtGui import QColor
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem, QWidget

from engine.experiments import RunResult

TABLE_COLUMNS = ("#", "run", "top-1 %", "Δ pt", "F1 %", "latency ms", "speed-up", "size MB", "MACs M", "score",
                 "constraints")


class ComparisonTable(QTableWidget):
    """Read-only rows, one selected at a time; `show_ranking` refills it."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, len(TABLE_COLUMNS), parent)
        self.setHorizontalHeaderLabels(TABLE_COLUMNS)
        self.verticalHeader().setVisible(False)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)

    def show_ranking(self, ranking, baseline: RunResult | None) -> None:
        """The original (when known) on the first row, then the ranked runs."""
        rows: list[tuple[RunResult, object]] = ([(baseline, None)] if baseline else [])
        if ranking:
            rows += [(e.result, e) for e in ranking.entries]
        self.setRowCount(len(rows))
        b = baseline.metrics if baseline else None
        for i, (r, e) in enumerate(rows):
            m = r.metrics
            speed = r.latency_speedup(baseline) if e is not None else None
            cells = ("–" if e is None else str(e.rank), r.label, f"{m.top1 * 100:.2f}",
                     f"{(m.top1 - b.top1) * 100:+.2f}" if b else "–", f"{m.f1_macro * 100:.2f}",
                     f"{m.latency():.3f}" if m.latency() else "–", f"{speed:.2f}×" if speed else "–",
                     f"{m.size_bytes / 1e6:.3f}", f"{m.macs / 1e6:.2f}", "–" if e is None else f"{e.score:.3f}",
                     "original" if e is None else ("✓" if e.feasible else "✗ " + "; ".join(e.violations)))
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if e is not None and not e.feasible:
                    item.setBackground(QColor("#fde2e2"))
                    item.setForeground(QColor("#1a1a1a"))  # a light tint needs dark text, also in a dark theme
                    item.setToolTip("breaks: " + "; ".join(e.violations))
                elif e is not None and ranking.best is e:
                    item.setBackground(QColor("#dff2df"))
                    item.setForeground(QColor("#1a1a1a"))
                    f = item.font()
                    f.setBold(True)
                    item.setFont(f)
                self.setItem(i, col, item)
