#!/usr/bin/env bash
# Wrap dist/PruneLab (from `make bundle`) into prunelab_VERSION_amd64.deb with dpkg-deb:
#   /opt/prunelab/          the bundle
#   /usr/bin/prunelab       the launcher on the PATH
#   /usr/share/applications/prunelab.desktop, /usr/share/icons/hicolor/*/apps/prunelab.{png,svg}
# Install with `sudo apt install ./prunelab_VERSION_amd64.deb`: apt pulls the Depends below (Qt's system
# libraries and Debian's Fashion-MNIST package, the demo's data). No maintainer scripts: the icon cache
# and the menu are refreshed by the dpkg triggers of hicolor-icon-theme and desktop-file-utils.
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=dist/PruneLab
[[ -x $BUNDLE/PruneLab ]] || { echo "no bundle in $BUNDLE: run \`make bundle\` first" >&2; exit 2; }
VERSION=$(.venv/bin/python -c "import engine; print(engine.__version__)")
NAME=prunelab_${VERSION}_amd64
ROOT=build/deb/$NAME
# What Qt's xcb platform and QtWebEngine (Chromium) load from the system; alternatives name the t64
# renames of Debian 13 / Ubuntu 24.04. The graph viewer writes tensor shapes between CJK angle brackets
# (U+3008/3009), which DejaVu lacks: a small font with them, or the shapes show as boxes.
DEPENDS="libc6 (>= 2.28), libstdc++6, libgcc-s1, libglib2.0-0t64 | libglib2.0-0, libdbus-1-3, libfontconfig1, \
libfreetype6, libx11-6, libx11-xcb1, libxcb1, libxcb-cursor0, libxcb-icccm4, libxcb-image0, libxcb-keysyms1, \
libxcb-randr0, libxcb-render-util0, libxcb-shape0, libxcb-xfixes0, libxcb-xkb1, libxkbcommon0, libxkbcommon-x11-0, \
libxcomposite1, libxdamage1, libxrandr2, libxtst6, libxkbfile1, libxshmfence1, libxrender1, libxi6, libegl1, libgl1, \
libopengl0, libgbm1, libdrm2, libnss3, libnspr4, libasound2t64 | libasound2, \
fonts-wqy-microhei | fonts-noto-cjk | fonts-droid-fallback, dataset-fashion-mnist"

rm -rf "$ROOT"
mkdir -p "$ROOT/DEBIAN" "$ROOT/opt" "$ROOT/usr/bin" "$ROOT/usr/share/applications" \
    "$ROOT/usr/share/doc/prunelab" "$ROOT/usr/share/icons/hicolor/scalable/apps"
cp -al "$BUNDLE" "$ROOT/opt/prunelab" 2>/dev/null || cp -a "$BUNDLE" "$ROOT/opt/prunelab"  # hard links: no 4 GB copy

cat > "$ROOT/usr/bin/prunelab" <<'EOF'
#!/bin/sh
# PruneLab: `prunelab` opens the app, `prunelab COMMAND` runs the command line, `prunelab --self-test` checks the machine.
exec /opt/prunelab/PruneLab "$@"
EOF
chmod 755 "$ROOT/usr/bin/prunelab"

cat > "$ROOT/usr/share/applications/prunelab.desktop" <<'EOF'
[Desktop Entry]
Type=Application
Name=PruneLab
GenericName=Neural network pruning
Comment=Prune trained image classifiers and compare the methods
Exec=prunelab
Icon=prunelab
Terminal=false
Categories=Education;Science;ArtificialIntelligence;
Keywords=pruning;pytorch;neural network;compression;
StartupWMClass=PruneLab
EOF

for png in resources/icons/prunelab-*.png; do
    size=${png##*-}; size=${size%.png}
    mkdir -p "$ROOT/usr/share/icons/hicolor/${size}x${size}/apps"
    cp "$png" "$ROOT/usr/share/icons/hicolor/${size}x${size}/apps/prunelab.png"
done
cp resources/icons/prunelab.svg "$ROOT/usr/share/icons/hicolor/scalable/apps/prunelab.svg"
cat > "$ROOT/usr/share/doc/prunelab/copyright" <<'EOF'
PruneLab, with Python, PyTorch, Qt for Python (LGPLv3), Netron (MIT), onnxruntime (MIT) and NVIDIA's CUDA
runtime libraries (NVIDIA's redistribution licence) bundled under /opt/prunelab by PyInstaller.
EOF

cat > "$ROOT/DEBIAN/control" <<EOF
Package: prunelab
Version: $VERSION
Architecture: amd64
Maintainer: PruneLab <prunelab@localhost>
Section: science
Priority: optional
Installed-Size: $(du -sk --exclude=DEBIAN "$ROOT" | cut -f1)
Depends: $DEPENDS
Recommends: hicolor-icon-theme, desktop-file-utils
Description: prune trained image classifiers and compare the methods
 A desktop application (Qt) and a command line that prune PyTorch image
 classifiers with structured and unstructured methods and show accuracy,
 size, MACs and latency before and after. Run "prunelab --self-test" once
 per machine to check that everything works (CUDA included, where present).
EOF

start=$(date +%s)
# zstd: fast and multi-threaded on a 4 GB payload (dpkg >= 1.21.18: Debian 12, Ubuntu 22.04 and later)
dpkg-deb --root-owner-group -Zzstd -z3 --build "$ROOT" "$NAME.deb"
echo "wrote $NAME.deb ($(du -h "$NAME.deb" | cut -f1), installs $(du -sh --exclude=DEBIAN "$ROOT" | cut -f1)) in $(( $(date +%s) - start )) s"
