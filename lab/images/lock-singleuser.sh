#!/usr/bin/env bash
# Resolve the single-user image's lock (cablab_cluster/bundle/singleuser-constraints.txt)
# with the image's own Python: Debian bookworm's python3 (3.11.2; some current releases
# need >= 3.11.5, so resolving with another Python gives a lock the image cannot install).
# The top-level packages are render.SINGLEUSER_STACK, jupyterhub at the hub's version.
#   bash lab/images/lock-singleuser.sh        (needs dockerd and cablab/base:bookworm: lab/images/build-base.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${PYTHON:-.venv/bin/python}
top=$("$python" -c 'from cablab_cluster.render import SINGLEUSER_STACK as s, VERSIONS as v
print(" ".join(f"{p}=={v[p]}" if p in v else p for p in s))')
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "[lock] resolving in cablab/base:bookworm: $top"
docker run --rm -v "$out":/out -v /usr/local/share/ca-certificates:/usr/local/share/ca-certificates:ro \
  cablab/base:bookworm sh -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends \
    python3-venv ca-certificates >/dev/null && update-ca-certificates >/dev/null && python3 -m venv /v \
    && PIP_CERT=/etc/ssl/certs/ca-certificates.crt /v/bin/pip install -q --dry-run --ignore-installed \
       --report /out/report.json $top"
lock=cablab_cluster/bundle/singleuser-constraints.txt
{
  echo "# The single-user image's lock: every node builds the same environment (pip -c)."
  echo "# Resolved with Debian bookworm's Python 3.11.2 by lab/images/lock-singleuser.sh; do not edit by hand."
  "$python" -c 'import json, sys
r = json.load(open(sys.argv[1]))
for i in sorted(r["install"], key=lambda i: i["metadata"]["name"].lower()):
    print(i["metadata"]["name"] + "==" + i["metadata"]["version"])' "$out/report.json"
} >"$lock"
echo "[lock] wrote $lock ($(grep -vc '^#' "$lock") packages)"
