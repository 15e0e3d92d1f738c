"""One place for persistent settings: window layout, recent files and the last options (QSettings).

Tests and the benchmark point the settings at a temporary folder by setting PRUNELAB_SETTINGS_DIR
before the window is created; otherwise the platform's native store is used.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TypeVar

from PySide6.QtCore import QByteArray, QSettings

ORGANIZATION = "PruneLab"
APPLICATION = "PruneLab"
MAX_RECENT = 8
T = TypeVar("T")


def settings_dir_override() -> Path | None:
    """The folder named by PRUNELAB_SETTINGS_DIR, if any."""
    value = os.environ.get("PRUNELAB_SETTINGS_DIR")
    return Path(value) if value else None


class Settings:
    """Typed access to QSettings; every key the app stores is named here."""

    def __init__(self, store: QSettings | None = None) -> None:
        if store is None:
            folder = settings_dir_override()
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
                store = QSettings(str(folder / "prunelab.ini"), QSettings.Format.IniFormat)
            else:
                store = QSettings(ORGANIZATION, APPLICATION)
        self.store = store

    def value(self, key: str, default: T, kind: type[T]) -> T:
        """A stored value converted to `kind` (QSettings returns strings from INI files)."""
        raw = self.store.value(key, default)
        if raw is None:
            return default
        try:
            if kind is bool and isinstance(raw, str):
                return raw.lower() in ("1", "true", "yes")  # type: ignore[return-value]
            return kind(raw)  # type: ignore[call-arg]
        except (TypeError, ValueError):
            return default

    def set_value(self, key: str, value: Any) -> None:
        """Store a value."""
        self.store.setValue(key, value)

    # --------------------------------------------------------------------- window
    def geometry(self) -> QByteArray | None:
        """Saved window geometry, or None on the first start."""
        raw = self.store.value("window/geometry")
        return raw if isinstance(raw, QByteArray) and not raw.isEmpty() else None

    def window_state(self) -> QByteArray | None:
        """Saved dock/toolbar state."""
        raw = self.store.value("window/state")
        return raw if isinstance(raw, QByteArray) and not raw.isEmpty() else None

    def save_window(self, geometry: QByteArray, state: QByteArray) -> None:
        """Remember the window layout."""
        self.store.setValue("window/geometry", geometry)
        self.store.setValue("window/state", state)

    # --------------------------------------------------------------------- recent files
    def recent(self, kind: str) -> list[str]:
        """Recently used model files or dataset specs (kind: 'models' or 'datasets'), newest first."""
        raw = self.store.value(f"recent/{kind}", "[]")
        try:
            items = json.loads(raw) if isinstance(raw, str) else list(raw or [])
        except json.JSONDecodeError:
            items = []
        return [str(i) for i in items][:MAX_RECENT]

    def add_recent(self, kind: str, item: str) -> list[str]:
        """Put `item` first in the recent list and return the list."""
        items = [item] + [i for i in self.recent(kind) if i != item]
        items = items[:MAX_RECENT]
        # JSON, because INI files turn one-element lists into plain strings
        self.store.setValue(f"recent/{kind}", json.dumps(items))
        return items

    # --------------------------------------------------------------------- options
    def options(self, section: str) -> dict:
        """The last options of a panel, as saved by save_options."""
        raw = self.store.value(f"options/{section}", "{}")
        try:
            value = json.loads(raw) if isinstance(raw, str) else {}
        except json.JSONDecodeError:
            value = {}
        return value if isinstance(value, dict) else {}

    def save_options(self, section: str, options: dict) -> None:
        """Remember a panel's options (plain JSON values only)."""
        self.store.setValue(f"options/{section}", json.dumps(options))

    def sync(self) -> None:
        """Write pending changes to disk."""
        self.store.sync()
