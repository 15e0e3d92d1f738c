"""The one folder PruneLab keeps its data in (result store, logs), found the platform's way."""
from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP = "prunelab"


def data_dir() -> Path:
    """The user's PruneLab data folder (PRUNELAB_DATA_DIR overrides it); not created here."""
    override = os.environ.get("PRUNELAB_DATA_DIR")
    return Path(override) if override else platformdirs.user_data_path(APP, appauthor=False)


def log_dir() -> Path:
    """Where the logs go: PRUNELAB_LOG_DIR, else the data folder (one place to look for everything)."""
    override = os.environ.get("PRUNELAB_LOG_DIR")
    return Path(override) if override else data_dir()


def cache_dir() -> Path:
    """Where measured figures that can be measured again are kept (PRUNELAB_CACHE_DIR overrides it)."""
    override = os.environ.get("PRUNELAB_CACHE_DIR")
    return Path(override) if override else platformdirs.user_cache_path(APP, appauthor=False)
