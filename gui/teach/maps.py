"""Feature maps: one test image, every channel's activation map (removed ones marked), and the top-5 of
the original and the pruned model."""
from __future__ import annotations

from html import escape

import numpy as np
from PySide6.QtCore import QRectF, Qt  # PySide6 first, so pyqtgraph binds it
from PySide6.QtGui import QPainterPath, QTransform
from PySide6.QtWidgets import (QGraphicsItem, QGraphicsPathItem, QGraphicsSimpleTextItem, QHBoxLayout, QLabel,
                               QPushButton, QSpinBox, QVBoxLayout, QWidget)

import pyqtgraph as pg

from engine.explain import ImageExplanation, Prediction
from gui import theme
from gui.widgets import VerticalScrollArea

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
        side_widget = QWidget()
        side = QVBoxLayout(side_widget)
        side.setContentsMargins(0, 0, 0, 0)
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
        # the picture and the predictions scroll: two or three top-5 tables are taller than a 720-pixel screen
        # leaves, and the window must not grow past the screen to show them
        body.addWidget(VerticalScrollArea(side_widget))
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
        """Every channel's map in one mosaic image (each scaled to its own range, through the colour map), with
        its number above and a red frame when it is removed: one image item instead of a view box per channel,
        which took 0.4 s of frozen window for 32 channels on a busy machine."""
        self.grid.clear()
        maps = result.maps.maps
        n = min(len(maps), MAX_MAPS)
        columns = int(np.ceil(np.sqrt(n * 1.5)))
        rows = int(np.ceil(n / columns))
        h, w = maps.shape[1], maps.shape[2]
        gap = max(3, round(0.5 * max(h, w)))  # room for the number above each map
        cell_h, cell_w = h + gap, w + max(1, gap // 3)
        mosaic = np.zeros((rows * cell_h, columns * cell_w, 4), dtype=np.ubyte)
        box = self.grid.addViewBox(lockAspect=True, invertY=True)
        box.setMouseEnabled(False, False)
        image = pg.ImageItem()
        foreground = theme.plot_foreground().name()
        frames = QPainterPath()
        words: list[tuple[str, str, float, float]] = []
        for c in range(n):
            low, high = float(maps[c].min()), float(maps[c].max())
            scaled = (maps[c] - low) / (high - low) if high > low else np.zeros_like(maps[c])
            top, left = (c // columns) * cell_h + gap, (c % columns) * cell_w
            mosaic[top:top + h, left:left + w] = self.colormap.map(scaled.ravel(), mode="byte").reshape(h, w, 4)
            cut = bool(result.cut[c])
            colour = theme.REMOVED_COLOUR if cut else foreground
            words.append((f"{c} ✕" if cut else str(c), colour, left + w / 2, top))
            if cut:
                frames.addRect(QRectF(left - 0.5, top - 0.5, w + 1, h + 1))
        image.setImage(mosaic.transpose(1, 0, 2))
        box.addItem(image)
        # plain Qt items as the image's children, not pyqtgraph items: adding 32 labels and frames to the view
        # box one by one took most of a second; these cost a few milliseconds and keep their size in pixels
        outline = QGraphicsPathItem(frames, image)
        outline.setPen(pg.mkPen(theme.REMOVED_COLOUR, width=2, cosmetic=True))
        for text, colour, x, y in words:
            label = QGraphicsSimpleTextItem(text, image)
            label.setBrush(pg.mkBrush(colour))
            label.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations)
            size = label.boundingRect()
            label.setTransform(QTransform.fromTranslate(-size.width() / 2, -size.height()))
            label.setPos(x, y)
        box.autoRange(padding=0.01)
        removed = int(result.cut.sum())
        more = f" Showing the first {n} of {len(maps)} channels." if len(maps) > n else ""
        self.text.setText(f"Each small picture is one output channel of {result.maps.layer} for this image (bright: "
                          f"strong activation, each scaled to its own range). The {removed} channels with red "
                          f"titles and borders are the ones the method removes.{more} The pruned model's "
                          "predictions are taken right after pruning; recovery (BatchNorm re-estimation, "
                          "fine-tuning) usually wins back much of what is lost.")
