#!/usr/bin/env bash
# Install prunelab_*.deb on this machine (as root), self-test it, open the window under Xvfb and take a
# screenshot, then remove it and check that nothing is left under /opt and /usr.
#     sudo bash packaging/test_deb.sh [prunelab_VERSION_amd64.deb] [SCREENSHOT.png]
set -euo pipefail
cd "$(dirname "$0")/.."
DEB=${1:-$(ls -t prunelab_*_amd64.deb 2>/dev/null | head -1)}
SHOT=${2:-build/deb/screenshot.png}
[[ -f $DEB ]] || { echo "no .deb: run \`make deb\` first" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "run as root: it installs and removes a package" >&2; exit 2; }
if dpkg -s prunelab >/dev/null 2>&1; then
    echo "prunelab is already installed; remove it first (apt-get remove prunelab)" >&2; exit 2
fi
WORK=$(mktemp -d /tmp/prunelab-debtest-XXXXXX)
export PRUNELAB_DATA_DIR=$WORK/data PRUNELAB_SETTINGS_DIR=$WORK/settings  # the test leaves $HOME alone
snapshot() { find /opt /usr -xdev 2>/dev/null | grep -v '/__pycache__' | sort; }
snapshot > "$WORK/before.txt"

echo "== install $DEB"
start=$(date +%s)
apt-get install -y --no-install-recommends "./$DEB"
echo "installed in $(( $(date +%s) - start )) s; $(du -sh /opt/prunelab | cut -f1) under /opt/prunelab"
command -v prunelab
dpkg -L prunelab | grep -v '^/opt/prunelab/' 
if command -v desktop-file-validate >/dev/null; then desktop-file-validate /usr/share/applications/prunelab.desktop; fi

echo "== prunelab --self-test --gui"
(cd "$WORK" && prunelab --self-test --gui)

echo "== the window under Xvfb"
mkdir -p "$(dirname "$SHOT")"
xvfb-run -a -s "-screen 0 1600x1000x24" bash -c '
    prunelab & app=$!
    for i in $(seq 1 120); do  # until the demo is loaded and its graph is shown (the log says so)
        grep -q "showing original graph" "$PRUNELAB_DATA_DIR/prunelab.log" 2>/dev/null && break
        sleep 1
    done
    sleep 8  # Netron draws after its page loads
    xdotool search --name PruneLab | head -1 | xargs -r -I{} xwininfo -id {} | grep -E "Width|Height|Map State" || true
    import -window root "$0"
    kill $app; wait $app || true' "$SHOT"
echo "screenshot: $SHOT"

echo "== remove"
apt-get purge -y prunelab
snapshot > "$WORK/after.txt"
if ! diff "$WORK/before.txt" "$WORK/after.txt"; then
    echo "FAIL: the files above were left under /opt or /usr (or went missing)" >&2
    exit 1
fi
[[ ! -e /opt/prunelab && ! -e /usr/bin/prunelab ]] || { echo "FAIL: /opt/prunelab or the launcher is left" >&2; exit 1; }
rm -rf "$WORK"
echo "the package installed, passed its self-test, showed its window and left nothing behind"
