#!/usr/bin/env bash
# Build the PruneLab desktop bundle (dist/PruneLab/) with PyInstaller, inside the project's venv.
# `make bundle` runs the test suite first and then this script with --no-suite.
#
# The bundle is built under build/ and moved to dist/PruneLab only after its own self-test has passed
# (and, without --no-suite, the test suite before it), so dist/ never holds a bundle that failed.
set -euo pipefail
cd "$(dirname "$0")/.."
SUITE=1
[[ "${1:-}" == "--no-suite" ]] && SUITE=0

make venv
.venv/bin/pip install -q -r packaging/requirements.txt
if (( SUITE )); then
    make test
fi
ROOT=$PWD
STAGE=build/stage
start=$(date +%s)
rm -rf "$STAGE"
.venv/bin/pyinstaller packaging/prunelab.spec --noconfirm --log-level WARN --distpath "$STAGE" \
    --workpath build/pyinstaller
built=$(date +%s)
echo "built $STAGE/PruneLab in $(( (built - start) / 60 )) min $(( (built - start) % 60 )) s"

# The bundle's own self-test, from a folder outside the checkout so nothing resolves to the sources.
# QtWebEngine refuses to run as root without this; a normal user does not need it.
echo "== self-test of the bundle"
if ! (cd / && env QTWEBENGINE_DISABLE_SANDBOX=1 "$ROOT/$STAGE/PruneLab/PruneLab" --self-test --gui); then
    echo "the bundle's self-test failed: not moved to dist/ (it stays in $STAGE for a look)" >&2
    exit 1
fi
rm -rf dist/PruneLab
mkdir -p dist
mv "$STAGE/PruneLab" dist/PruneLab
.venv/bin/python packaging/size_report.py dist/PruneLab
echo "built dist/PruneLab; \`make deb\` wraps it into a Debian package"
