#!/usr/bin/env bash
# Build the lowprec image with podman, on a machine with no Docker engine and, for the build
# itself, no network:
#   1. a base image: Debian bookworm with python3 made by mmdebstrap and imported into podman
#      (skipped when BASE_IMAGE names one already; the Dockerfile defaults to python:3.11-slim);
#   2. the wheels: requirements.lock's pins for CPython 3.11 on this architecture, plus
#      lowprec's own wheel, downloaded by pip into build/wheels/;
#   3. `podman build --network none`, tagged as components/_image.py's IMAGE.
# Environment: IMAGE, BASE_IMAGE, PYTHON (the pip to download with), DEBIAN_MIRROR.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CONTAINERS_CONF="$ROOT/scripts/containers.conf"

BASE_IMAGE="${BASE_IMAGE:-localhost/lowprec-base:bookworm}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
# The tag the pipelines name: components/_image.py, from the package's version.
IMAGE="${IMAGE:-$("$PYTHON" -c 'from components._image import IMAGE; print(IMAGE)')}"
TOOLS=(podman buildah mmdebstrap runc)

missing=()
for tool in "${TOOLS[@]}"; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if (( ${#missing[@]} )); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "installing from Debian: buildah podman skopeo mmdebstrap uidmap fuse-overlayfs runc"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            buildah podman skopeo mmdebstrap uidmap fuse-overlayfs runc >/dev/null
    else
        echo "build-image: missing ${missing[*]}; install Debian's buildah podman skopeo mmdebstrap uidmap fuse-overlayfs runc" >&2
        exit 2
    fi
fi

mkdir -p build
if [[ "$BASE_IMAGE" == localhost/lowprec-base:* ]] && ! podman image exists "$BASE_IMAGE"; then
    echo "base image $BASE_IMAGE: mmdebstrap bookworm (python3, python3-venv, ca-certificates)"
    rm -f build/rootfs.tar
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm build/rootfs.tar "$DEBIAN_MIRROR"
    podman import --quiet build/rootfs.tar "$BASE_IMAGE" >/dev/null
    rm -f build/rootfs.tar
fi

echo "wheels: requirements.lock for CPython 3.11 on $(uname -m), and lowprec's own -> build/wheels/"
# pip wheel reuses published wheels and builds the pure-Python sdists (kfp ships only those),
# so the interpreter must be the image's: CPython 3.11.
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "build-image: $PYTHON is not CPython 3.11 (the image's Python); set PYTHON" >&2
    exit 2
fi
mkdir -p build/wheels
rm -f build/wheels/lowprec-*.whl
quiet_pip() { "$PYTHON" -m pip "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; return "${PIPESTATUS[0]}"; }
quiet_pip wheel --quiet --disable-pip-version-check --wheel-dir build/wheels --requirement requirements.lock
quiet_pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir build/wheels .

echo "podman build --network none -t $IMAGE (BASE_IMAGE=$BASE_IMAGE)"
podman build --quiet --network none --build-arg "BASE_IMAGE=$BASE_IMAGE" --tag "$IMAGE" --file Dockerfile . >/dev/null
podman image inspect "$IMAGE" --format "built $IMAGE: {{.Size}} bytes, user {{.Config.User}}"
# Each rebuild leaves the previous image and its builder stage untagged (about 1.1 GB): drop
# those, keeping this build's builder stage, the layer cache of the next build.
podman image prune --force --filter until=15m >/dev/null
