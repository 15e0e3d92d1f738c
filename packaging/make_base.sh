#!/usr/bin/env bash
# A local stand-in for the Dockerfile's base image, for machines where it cannot be pulled: Debian bookworm
# (debootstrap, minbase) with Debian's Python 3.11, tagged under the name the Dockerfile's FROM asks for,
# so the same Dockerfile builds with `buildah bud --pull=never`. Like the official python:3.11-slim-bookworm,
# `python` and `pip` on the PATH install into a Python of their own (a venv in /usr/local/python, as Debian's
# own Python refuses pip installs), LANG is C.UTF-8 and the apt lists are empty.
#     bash packaging/make_base.sh [MIRROR]     (root; default mirror http://deb.debian.org/debian)
set -euo pipefail
cd "$(dirname "$0")/.."
MIRROR=${1:-http://deb.debian.org/debian}
FROM=$(awk '$1 == "FROM" {print $2; exit}' packaging/Dockerfile)
case $FROM in */*) NAME=$FROM ;; *) NAME=docker.io/library/$FROM ;; esac  # where docker would file it

for tool in debootstrap buildah; do
    command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install -y $tool" >&2; exit 2; }
done
[[ $(id -u) == 0 ]] || { echo "debootstrap needs root: sudo bash $0" >&2; exit 2; }

ROOT=$(mktemp -d /var/tmp/prunelab-base-XXXXXX)
CTR=
cleanup() {
    set +e
    if [[ -n $CTR ]]; then buildah rm "$CTR" >/dev/null 2>&1 || true; fi
    # debootstrap may leave /proc, /sys or bound devices mounted when it fails: never delete through them
    grep -o " $ROOT/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l
    if grep -q " $ROOT" /proc/mounts; then echo "left $ROOT in place: something is still mounted there" >&2
    else rm -rf --one-file-system "$ROOT"; fi
}
trap cleanup EXIT

echo "== debootstrap bookworm ($MIRROR) into $ROOT"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$ROOT" "$MIRROR" \
    > "$ROOT.log" 2>&1 || { tail -20 "$ROOT.log" >&2; exit 1; }
rm -f "$ROOT.log"
grep -q " $ROOT/" /proc/mounts && { echo "debootstrap left mounts under $ROOT" >&2; exit 1; }
rm -rf "${ROOT:?}"/dev/* "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/* "$ROOT"/etc/apt/sources.list
# the official Debian images' sources: the release, its updates and the security archive
cat > "$ROOT/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF

# as in the official Debian images: apt keeps no downloaded packages and no package caches in the image
cat > "$ROOT/etc/apt/apt.conf.d/docker-clean" <<'CLEAN'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CLEAN
echo 'APT::AutoRemove::SuggestsImportant "false";' > "$ROOT/etc/apt/apt.conf.d/docker-autoremove-suggests"
rm -f "$ROOT"/var/cache/apt/*.bin

echo "== into a container image"
CTR=$(buildah from scratch)
MNT=$(buildah mount "$CTR")
tar -C "$ROOT" --numeric-owner -cf - . | tar -C "$MNT" --numeric-owner -xpf -
buildah umount "$CTR" >/dev/null
# the point releases and security fixes since the release (debootstrap takes the release alone)
buildah run --isolation chroot "$CTR" -- sh -c \
    'apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get upgrade -qy && rm -rf /var/lib/apt/lists/*' \
    > "$ROOT.log" 2>&1 || { tail -20 "$ROOT.log" >&2; exit 1; }
rm -f "$ROOT.log"
buildah run --isolation chroot "$CTR" -- python3 -m venv /usr/local/python
buildah run --isolation chroot "$CTR" -- sh -c 'rm -rf /root/.cache /var/log/apt/* && find /usr -name __pycache__ -prune -exec rm -rf {} +'
buildah config --env PATH=/usr/local/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd python3 \
    --label org.opencontainers.image.description="local stand-in for $FROM: debootstrap bookworm, Debian's Python 3.11" \
    "$CTR"
buildah commit --rm "$CTR" "$NAME" >/dev/null
CTR=
echo "== $NAME (local base):"
buildah images --format '{{.Name}}:{{.Tag}} {{.ID}} {{.Size}}' "$NAME"
CTR=$(buildah from --pull=never "$NAME")
buildah run --isolation chroot "$CTR" -- sh -c 'echo "$(python --version), $(pip --version | cut -d" " -f1-2)"'
