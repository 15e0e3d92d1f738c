#!/usr/bin/env bash
# Checks the built headless image (`make image`), not a copy of its files: inside the image, as the user it
# is configured with,
#   1. the HEALTHCHECK's own command, read from the image (`--self-test --headless`);
#   2. a bad option: exit code 2 and one line on stderr;
#   3. `prune` of the demo with the runs folder mounted from this machine;
# then reads the output set here: the prune's metrics JSON and model.json parse, the pruned model is
# smaller, every file the run lists exists and belongs to the image's user. docker where its daemon runs,
# else buildah (`--isolation chroot`). Exits non-zero on the first failure; the output folder is kept then.
#     bash packaging/test_image.sh [IMAGE]      (default prunelab; buildah needs root)
set -euo pipefail
IMAGE=${1:-prunelab}
fail() { echo "FAIL: $*" >&2; exit 1; }

if docker info >/dev/null 2>&1; then
    ENGINE=docker
    INSPECT=$(docker image inspect "$IMAGE") || fail "no image $IMAGE: make image"
else
    command -v buildah >/dev/null || fail "no Docker daemon and no buildah (apt-get install -y buildah)"
    ENGINE=buildah
    INSPECT=$(buildah inspect --type image "$IMAGE") || fail "no image $IMAGE: make image"
fi
# the Docker form of the configuration (the OCI form has no HEALTHCHECK)
CONFIG=$(python3 -c 'import json, sys; d = json.loads(sys.argv[1])
print(json.dumps(d[0]["Config"] if isinstance(d, list) else (d.get("Docker") or {}).get("config")))' "$INSPECT")
field() {  # a field of the image's configuration (a list: one item a line)
    python3 -c 'import json, sys
value = json.loads(sys.argv[1])
for key in sys.argv[2:]:
    value = (value or {}).get(key)
print("\n".join(value) if isinstance(value, list) else value or "")' "$CONFIG" "$@"
}
USER_IN=$(field User)
WORKDIR=$(field WorkingDir)
mapfile -t ENTRY < <(field Entrypoint)
mapfile -t HEALTH < <(field Healthcheck Test)
echo "== $IMAGE ($ENGINE): user ${USER_IN:-root}, workdir $WORKDIR, entrypoint ${ENTRY[*]}"
[[ -n $USER_IN ]] || fail "the image runs as root"
[[ ${HEALTH[0]:-} == CMD ]] || fail "the image has no HEALTHCHECK CMD (buildah: build with --format docker)"
[[ ${#ENTRY[@]} -gt 0 ]] || fail "the image has no ENTRYPOINT"
if [[ $ENGINE == docker ]]; then docker history "$IMAGE"; else
    python3 -c 'import json, sys
d = json.loads(sys.argv[1])
sizes = [layer["size"] for layer in json.loads(d["Manifest"])["layers"]]
steps = [h.get("created_by", "") for h in d["Docker"]["history"] if not h.get("empty_layer")]
print(f"size {sum(sizes) / 1e9:.2f} GB in {len(sizes)} layers; the largest:")
for size, step in sorted(zip(sizes, steps), reverse=True)[:4]:
    print(f"  {size / 1e6:8.1f} MB  {step[:100]}")
labels = d["Docker"]["config"].get("Labels") or {}
print("base:", labels.get("org.opencontainers.image.description", "as pulled (no description label)"))' \
        "$INSPECT"
fi

RUNS=$(mktemp -d /tmp/prunelab-image-runs-XXXXXX)
RUNS_IN=$WORKDIR/runs
CTR=
cleanup() {
    local rc=$?
    if [[ -n $CTR ]]; then buildah rm "$CTR" >/dev/null || true; fi
    if [[ $rc == 0 ]]; then rm -rf "$RUNS"; else echo "the output is left in $RUNS" >&2; fi
}
trap cleanup EXIT
if [[ $ENGINE == buildah ]]; then
    CTR=$(buildah from --pull=never "$IMAGE")
fi
in_image() {  # a whole command line, run in the image as its configured user with the runs folder mounted
    if [[ $ENGINE == docker ]]; then
        docker run --rm -v "$RUNS:$RUNS_IN" --entrypoint "$1" "$IMAGE" "${@:2}"
    else
        buildah run --isolation chroot --user "$USER_IN" -v "$RUNS:$RUNS_IN" "$CTR" -- "$@"
    fi
}

UID_IN=$(in_image id -u "${USER_IN%%:*}") || fail "the image's user $USER_IN is unknown inside it"
echo "== as whom: $(in_image id)"
[[ $UID_IN != 0 ]] || fail "the image's user $USER_IN is root"
[[ $(in_image id -u) == "$UID_IN" ]] || fail "commands in the image do not run as its user $USER_IN"
# the image's user must be able to write to the mounted folder
if [[ $(id -u) == 0 ]]; then chown "$UID_IN" "$RUNS"; else chmod 777 "$RUNS"; fi

echo "== HEALTHCHECK: ${HEALTH[*]:1}"
start=$SECONDS
in_image "${HEALTH[@]:1}" | tee "$RUNS/selftest.txt" || fail "the health check failed"
grep -q '^ *pass ' "$RUNS/selftest.txt" || fail "the health check printed no passed check"
! grep -qi '^ *fail ' "$RUNS/selftest.txt" || fail "the health check reported a failure"
echo "(health check: $((SECONDS - start)) s)"

echo "== a bad option: exit code 2 and one line"
set +e  # stderr goes to the mounted folder from inside, apart from what the engine itself prints
in_image sh -c '"$@" > /dev/null 2> "$0"' "$RUNS_IN/bad.txt" \
    "${ENTRY[@]}" prune --model demo:resnet --data fashion-mnist --method no-such-method --ratio 0.5 2> /dev/null
rc=$?
set -e
cat "$RUNS/bad.txt"
[[ $rc == 2 && $(grep -c . "$RUNS/bad.txt") == 1 ]] || fail "a bad method gave exit code $rc, not 2 with one line"

PRUNE=(prune --model demo:resnet --data fashion-mnist --method l2 --ratio 0.5 --bn-recalibrate --out runs/l2
       --json runs/l2.json)
echo "== ${PRUNE[*]}"
start=$SECONDS
in_image "${ENTRY[@]}" "${PRUNE[@]}" || fail "prune failed"
echo "(prune: $((SECONDS - start)) s)"

echo "== the output set, read on this machine: $RUNS"
ls -l "$RUNS" "$RUNS/l2"
python3 - "$RUNS" "$RUNS_IN" "$UID_IN" <<'EOF' || fail "the output set"
import json, os, sys
from pathlib import Path

runs, runs_in, uid = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
problems = []
def read(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        sys.exit(f"FAIL: {path} does not read as JSON: {exc}")

run, card = read(runs / "l2.json"), read(runs / "l2" / "model.json")
before, after = run["before"], run["after"]
print(f"{'':12} {'before':>14} {'after':>14}")
print(f"{'top-1':12} {before['top1']:>14.2%} {after['top1']:>14.2%}   on {after.get('eval_images')} test images")
for name in ("params", "macs", "size_bytes"):
    print(f"{name:12} {before[name]:>14,} {after[name]:>14,}")
print("speed-ups  ", ", ".join(f"{k} {v:.2f}x" for k, v in run["speedups"].items()))
print("run seconds", run["seconds"], "| onnx check", json.dumps(card.get("onnx_check"))[:200])
if not 0.5 <= before["top1"] <= 1:
    problems.append(f"the demo's top-1 before pruning is {before['top1']}, not the demo's")
if not 0 <= after["top1"] <= 1:
    problems.append(f"top-1 after pruning is {after['top1']}")
if not (after["params"] < before["params"] and after["macs"] < before["macs"]):
    problems.append("the pruned model is not smaller")
listed = list(run["files"].values())
if not listed:
    problems.append("the run lists no files")
for path in listed:  # paths as the image saw them: under runs_in, or relative to the working folder
    rel = os.path.relpath(path, runs_in) if os.path.isabs(path) else os.path.relpath(path, "runs")
    host = runs / rel
    if not host.is_file() or host.stat().st_size == 0:
        problems.append(f"{path} is listed but {host} is missing or empty")
    elif str(host.stat().st_uid) != uid:
        problems.append(f"{host} belongs to uid {host.stat().st_uid}, not the image's user {uid}")
print("files      ", ", ".join(sorted(os.path.basename(p) for p in listed)))
for p in problems:
    print("FAIL:", p, file=sys.stderr)
sys.exit(1 if problems else 0)
EOF
echo "the image $IMAGE passes: health check, bad input, prune with its output read on the host"
