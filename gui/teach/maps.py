"""Feature maps: one test image, every channel's activation map (removed ones marked), and the top-5 of
the original and the pruned model."""
from __future__ import annotations

from html import escape

import numpy as np
from PySide6.QtCore import Qt  # PySide6 first, so pyqtgraph binds it
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSpinBox, QVBoxLayout, QWidget

import pyqtgraph as pg

from engine.explain import ImageExplanation, Prediction
from gui import theme

MAX_MAPS = 64  # a grid beyond this is unreadable; the rest are summarised in words


def _prediction_html(title: str, predictions: tuple[Prediction, ...], truth: int) -> str:
    rows = "".join(f"<tr><td>{'<b>' if p.index == truth else ''}{escape(p.name)}{'</b>' if p.index == truth else ''}"
                   f"</td><td align='right'>{p.probability:.1%}</td></tr>" for p in predictions)
    return f"<b>{escape(title)}</b><table cellspacing='4'>{rows}</table>"


class FeatureMapView(theme.PaletteWidget):
    """Pick a test image; see the layer's channels and what the original and the pruned model predict."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.result: ImageExplanation | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Test image:"))
        self.index_spin = QSpinBox()
        self.index_spin.setRange(0, 0)
        self.index_spin.setToolTip("Index of the image in the test split")
        bar.addWidget(self.index_spin)
        self.show_button = QPushButton("Show")
        self.show_button.setToolTip("Run the image through the layer, and through the original and a pruned copy")
        bar.addWidget(self.show_button)
        bar.addStretch(1)
        layout.addLayout(bar)
        body = QHBoxLayout()
        side = QVBoxLayout()
        self.image_view = pg.GraphicsLayoutWidget()
        self.image_view.setFixedSize(180, 180)
        self.image_box = self.image_view.addViewBox(lockAspect=True, invertY=True)
        self.image_box.setMouseEnabled(False, False)
        self.image_item = pg.ImageItem()
        self.image_box.addItem(self.image_item)
        side.addWidget(self.image_view)
        self.truth_label = QLabel("")
        self.truth_label.setWordWrap(True)
        side.addWidget(self.truth_label)
        self.predictions_label = QLabel("")
        self.predictions_label.setTextFormat(Qt.TextFormat.RichText)
        self.predictions_label.setWordWrap(True)
        side.addWidget(self.predictions_label, 1)
        body.addLayout(side)
        self.grid = pg.GraphicsLayoutWidget()
        body.addWidget(self.grid, 1)
        layout.addLayout(body, 1)
        self.text = QLabel("Each small picture is one output channel of the layer for this image (bright: strong "
                           "activation, each scaled to its own range). Red titles mark channels the method removes.")
        self.text.setWordWrap(True)
        layout.addWidget(self.text)
        self.colormap = pg.colormap.get("viridis")
        self._apply_palette()

    def _apply_palette(self) -> None:
        for view in (self.image_view, self.grid):
            view.setBackground(theme.plot_background())

    def set_image_count(self, count: int) -> None:
        """How many test images there are to pick from."""
        self.index_spin.setRange(0, max(0, count - 1))

    def show_image(self, result: ImageExplanation) -> None:
        """Draw the image, the channel maps and the predictions."""
        self.result = result
        picture = result.picture
        self.image_item.setImage(picture.T if picture.ndim == 2 else picture.transpose(1, 0, 2), levels=(0, 1))
        self.truth_label.setText(f"Test image {result.index}: <b>{escape(result.label_name)}</b>")
        parts = [_prediction_html("Original", result.original, result.label),
                 _prediction_html("Pruned, before any recovery", result.pruned, result.label)]
        if result.recovered:
            parts.append(_prediction_html("Pruned + BatchNorm re-estimated", result.recovered, result.label))
        self.predictions_label.setText("<br>".join(parts))
        self._draw_maps(result)

    def _draw_maps(self, result: ImageExplanation) -> None:
        self.grid.clear()
        maps = result.maps.maps
        n = min(len(maps), MAX_MAPS)
        columns = int(np.ceil(np.sqrt(n * 1.5)))
        for c in range(n):
            cut = bool(result.cut[c])
            label = f"{c} ✕" if cut else str(c)
            colour = theme.REMOVED_COLOUR if cut else theme.plot_foreground().name()
            self.grid.addLabel(f"<span style='color:{colour}'>{label}</span>", row=2 * (c // columns),
                               col=c % columns, size="8pt")
            box = self.grid.addViewBox(row=2 * (c // columns) + 1, col=c % columns, lockAspect=True, invertY=True)
            box.setMouseEnabled(False, False)
            if cut:
                box.setBorder(pg.mkPen(theme.REMOVED_COLOUR, width=2))
            item = pg.ImageItem(maps[c].T)
            item.setColorMap(self.colormap)
            low, high = float(maps[c].min()), float(maps[c].max())
            item.setLevels((low, high if high > low else low + 1e-6))
            box.addItem(item)
        removed = int(result.cut.sum())
        more = f" Showing the first {n} of {len(maps)} channels." if len(maps) > n else ""
        self.text.setText(f"Each small picture is one output channel of {result.maps.layer} for this image (bright: "
                          f"strong activation, each scaled to its own range). The {removed} channels with red "
                          f"titles and borders are the ones the method removes.{more} The pruned model's "
                          "predictions are taken right after pruning; recovery (BatchNorm re-estimation, "
                          "fine-tuning) usually wins back much of what is lost.")
