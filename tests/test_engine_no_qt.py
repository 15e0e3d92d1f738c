"""Design principle 1: engine/ (and the headless command line, cli/) never import PySide6, pyqtgraph or netron
(checked in a fresh interpreter)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from shared_fixtures import ROOT

FORBIDDEN = ("PySide6", "pyqtgraph", "netron")

PROBE = f"""
import importlib, json, pkgutil, sys
import cli, engine
names = sorted(m.name for pkg in (engine, cli) for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."))
for name in names:
    importlib.import_module(name)
loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set({FORBIDDEN!r}))
print(json.dumps({{"modules": names, "forbidden": loaded}}))
"""


@pytest.mark.heavy_memory(gib=1.0)
def test_engine_imports_no_gui_library():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    # The probe really walked the package (a typo in it must not make this test pass vacuously).
    assert {"engine.data", "engine.models", "engine.metrics", "cli.main"} <= set(report["modules"])
    assert report["forbidden"] == [], f"engine/ or cli/ pulled in {report['forbidden']}"
