#!/usr/bin/env bash
# Build the prototype hub / single-user images against the lab base image and
# report sizes (raw and `docker save | gzip`).
#
#   lab/images/prototype/build.sh hub|singleuser [extra docker build args...]
#
# Env: BASE_IMAGE   (default cablab/base:bookworm, built by ../build-base.sh)
#      TAG          (default cablab/<name>:proto)
#      EXTRA_CA_DIR (default /usr/local/share/ca-certificates): *.crt files
#                   copied to the build context's extra-ca/, trusted by the
#                   build stages only (TLS-intercepting egress proxy). Empty
#                   or missing dir = nothing extra (a real cluster).
#      SAVE=0       skip the `docker save | gzip | wc -c` measurement.
set -euo pipefail
name=${1:?usage: build.sh hub|singleuser [docker build args]}; shift
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BASE_IMAGE=${BASE_IMAGE:-cablab/base:bookworm}
TAG=${TAG:-cablab/$name:proto}
EXTRA_CA_DIR=${EXTRA_CA_DIR:-/usr/local/share/ca-certificates}
DOCKER=${DOCKER:-docker}

ctx=$(mktemp -d /var/tmp/cablab-ctx.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
cp "$here/$name/Dockerfile" "$ctx/"
mkdir "$ctx/extra-ca"
if [ -d "$EXTRA_CA_DIR" ]; then
  find "$EXTRA_CA_DIR" -maxdepth 1 -name '*.crt' -exec cp {} "$ctx/extra-ca/" \;
fi

t0=$(date +%s)
# Classic builder: the docker 28 CLI has no buildx plugin here and the 20.10
# daemon's builder works fine for multi-stage builds.
DOCKER_BUILDKIT=0 $DOCKER build --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$TAG" "$@" "$ctx"
t1=$(date +%s)
size=$($DOCKER image inspect -f '{{.Size}}' "$TAG")
echo "== $TAG built in $((t1 - t0)) s; image size $size bytes ($((size / 1000000)) MB)"
if [ "${SAVE:-1}" = 1 ]; then
  gz=$($DOCKER save "$TAG" | gzip | wc -c)
  echo "== $TAG docker save | gzip: $gz bytes ($((gz / 1000000)) MB) [$(($(date +%s) - t1)) s]"
fi
