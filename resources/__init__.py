"""One way to find bundled files, from source checkouts and PyInstaller bundles alike."""
from __future__ import annotations

import sys
from pathlib import Path


def resource_root() -> Path:
    """Folder holding the resources (PyInstaller unpacks data under sys._MEIPASS)."""
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return Path(bundle) / "resources"
    return Path(__file__).resolve().parent


def resource_path(*parts: str) -> Path:
    """Path of a resource file, e.g. resource_path("models", "demo_resnet.pt")."""
    return resource_root().joinpath(*parts)
