"""The Experiment tab's comparison table: the original, then every run in the ranking's order, the best one
in bold green and the ones breaking a constraint in red."""
from __future__ import annotations

from PySide6.QtGui import QColor
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem, QWidget

from engine.experiments import RunResult, same_arch_text
from engine.report.content import accuracy_cell, latency_text, speedup_text
from gui.speed import run_batch

TABLE_COLUMNS = ("#", "run", "top-1 % [95 % CI]", "Δ pt", "F1 % [95 % CI]", "latency ms", "speed-up", "size MB",
                 "MACs M", "score", "constraints")
LATENCY_COL, SPEEDUP_COL = 5, 6
# Both at the plan's batch size (the largest measured), which the headers name once a run is known.
HEADER_TIPS = {2: "Top-1 accuracy with its 95 % interval from the images evaluated (Wilson); a rank marked '=' is "
                  "tied with the first within that noise",
               LATENCY_COL: "Median time for one batch of the size in the header, each model timed on its own",
               SPEEDUP_COL: "How many times faster than the original at the same batch size as the latency column: "
                            "the median of rounds timing the models interleaved (the plan's final comparison round, "
                            "else each run's paired rounds), its 95 % interval in brackets; or, when the plan did "
                            "not pair them, the ratio of the separately timed latencies"}


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
        for col, tip in HEADER_TIPS.items():
            self.horizontalHeaderItem(col).setToolTip(tip)

    def show_ranking(self, ranking, baseline: RunResult | None) -> None:
        """The original (when known) on the first row, then the ranked runs."""
        rows: list[tuple[RunResult, object]] = ([(baseline, None)] if baseline else [])
        if ranking:
            rows += [(e.result, e) for e in ranking.entries]
        self.setRowCount(len(rows))
        b = baseline.metrics if baseline else None
        batches = {run_batch(r.metrics) for r, _ in rows} - {None}
        where = f", batch {batches.pop()}" if len(batches) == 1 else ""
        self.horizontalHeaderItem(LATENCY_COL).setText(f"latency ms{where}")
        self.horizontalHeaderItem(SPEEDUP_COL).setText(f"speed-up{where}")
        for i, (r, e) in enumerate(rows):
            m = r.metrics
            same = same_arch_text(r)
            rank = "–" if e is None else ranking.rank_text(e)
            cells = (rank, r.label + (f" ({same})" if same else ""), accuracy_cell(m, "top1"),
                     f"{(m.top1 - b.top1) * 100:+.2f}" if b else "–", accuracy_cell(m, "f1_macro"),
                     latency_text(m), "–" if e is None else speedup_text(r, baseline),
                     f"{m.size_bytes / 1e6:.3f}", f"{m.macs / 1e6:.2f}", "–" if e is None else f"{e.score:.3f}",
                     "original" if e is None else ("✓" if e.feasible else "✗ " + "; ".join(e.violations)) + e.noise_text)
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
