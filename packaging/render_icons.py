"""Render resources/icons/prunelab.svg to the PNG sizes the hicolor theme wants, an .ico and an .icns.

Qt's own SVG renderer (already a dependency) draws the PNGs, so no extra tool is needed; Pillow (a
torchvision dependency) packs them into .ico (Windows) and .icns (macOS). Run after editing the SVG:
    .venv/bin/python packaging/render_icons.py
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ICONS = Path(__file__).resolve().parent.parent / "resources" / "icons"
SIZES = (16, 24, 32, 48, 64, 128, 256, 512)


def render(svg: Path, size: int, out: Path) -> None:
    """One square PNG of `size` pixels with a transparent background."""
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    QSvgRenderer(str(svg)).render(painter)
    painter.end()
    if not image.save(str(out)):
        raise OSError(f"could not write {out}")


def main() -> int:
    """Write prunelab-SIZE.png for every size, prunelab.ico and prunelab.icns beside the SVG."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PIL import Image
    from PySide6.QtGui import QGuiApplication

    app = QGuiApplication.instance() or QGuiApplication([])  # QImage text/painting wants an application
    svg = ICONS / "prunelab.svg"
    pngs = {size: ICONS / f"prunelab-{size}.png" for size in SIZES}
    for size, path in pngs.items():
        render(svg, size, path)
    biggest = Image.open(pngs[256])
    biggest.save(ICONS / "prunelab.ico", sizes=[(s, s) for s in (16, 24, 32, 48, 64, 128, 256)])
    Image.open(pngs[512]).save(ICONS / "prunelab.icns")
    del app
    print(f"wrote {len(pngs)} PNGs, prunelab.ico and prunelab.icns in {ICONS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
