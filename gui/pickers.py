"""File and folder pickers that open where the user last was: one remembered folder per picker.

A student's models and datasets usually live in one or two folders; starting every picker in the
working directory makes them walk there each time. The folder is kept in Settings under
`folders/<picker>`, so it survives a restart.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QFileDialog, QWidget

from gui.settings import Settings

FOLDER_KEY = "folders/{}"  # picker names: "model", "imagefolder", "cifar10", "python"


def last_folder(settings: Settings, picker: str, fallback: str = "") -> str:
    """The folder `picker` opened from last time (if it still exists), else `fallback`."""
    folder = settings.value(FOLDER_KEY.format(picker), "", str)
    return folder if folder and Path(folder).is_dir() else fallback


def remember_folder(settings: Settings, picker: str, folder: str | Path) -> None:
    """Start `picker` in `folder` next time."""
    settings.set_value(FOLDER_KEY.format(picker), str(folder))


def pick_file(parent: QWidget, settings: Settings, picker: str, title: str, filters: str,
              fallback: str = "") -> str:
    """A file chosen by the user ("" when cancelled); the picker remembers its folder."""
    path, _ = QFileDialog.getOpenFileName(parent, title, last_folder(settings, picker, fallback), filters)
    if path:
        remember_folder(settings, picker, Path(path).parent)
    return path


def pick_folder(parent: QWidget, settings: Settings, picker: str, title: str, fallback: str = "") -> str:
    """A folder chosen by the user ("" when cancelled). The next pick starts in its parent, where the
    sibling datasets are."""
    folder = QFileDialog.getExistingDirectory(parent, title, last_folder(settings, picker, fallback))
    if folder:
        remember_folder(settings, picker, Path(folder).parent)
    return folder
