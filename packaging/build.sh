#!/usr/bin/env bash
# Build the PruneLab desktop bundle (dist/PruneLab/) with PyInstaller, inside the project's venv.
set -euo pipefail
cd "$(dirname "$0")/.."
make venv
.venv/bin/pip install -q -r packaging/requirements.txt
.venv/bin/pyinstaller packaging/prunelab.spec --noconfirm --distpath dist --workpath build/pyinstaller
# Smoke test: the bundle must answer the headless CLI without a display.
dist/PruneLab/PruneLab models
echo "built dist/PruneLab (zip it, or wrap it in the platform's installer)"
