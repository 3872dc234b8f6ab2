#!/usr/bin/env bash
# End-to-end check of the prototype images on the host dockerd:
# hub (CHP + DockerSpawner) on a private bridge network spawns one
# single-user container through the API and reaches it through the proxy.
#
#   lab/images/prototype/smoke-test.sh [HUB_IMAGE] [SINGLEUSER_IMAGE]
#
# Uses only 127.0.0.1 (published port) and a docker bridge network it creates
# and removes again. Everything it starts is named cablab-smoke-*.
set -euo pipefail
HUB=${1:-cablab/hub:proto}
SU=${2:-cablab/singleuser:proto}
DOCKER=${DOCKER:-docker}
PORT=${PORT:-18000}
NET=cablab-smoke-net
TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
cfg=$(mktemp -d /var/tmp/cablab-smoke.XXXXXX)

cleanup() {
  $DOCKER rm -f cablab-smoke-hub >/dev/null 2>&1 || true
  for c in $($DOCKER ps -aq --filter name=cablab-smoke-user); do $DOCKER rm -f "$c" >/dev/null; done
  $DOCKER network rm "$NET" >/dev/null 2>&1 || true
  rm -rf "$cfg"
}
trap cleanup EXIT

cat >"$cfg/jupyterhub_config.py" <<EOF
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = "dockerspawner.DockerSpawner"
c.DockerSpawner.image = "$SU"
c.DockerSpawner.network_name = "$NET"
c.DockerSpawner.remove = True
c.DockerSpawner.name_template = "cablab-smoke-user-{username}"
c.JupyterHub.hub_ip = "0.0.0.0"
c.JupyterHub.hub_connect_ip = "cablab-smoke-hub"
c.JupyterHub.db_url = "sqlite:////tmp/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "/tmp/jupyterhub_cookie_secret"
c.ConfigurableHTTPProxy.pid_file = "/tmp/jupyterhub-proxy.pid"
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
c.JupyterHub.services = [{"name": "smoke", "api_token": "$TOKEN"}]
c.JupyterHub.load_roles = [{"name": "smoke", "scopes": ["admin:users", "admin:servers", "access:servers"], "services": ["smoke"]}]
EOF

$DOCKER network create "$NET" >/dev/null
t0=$(date +%s)
$DOCKER run -d --name cablab-smoke-hub --network "$NET" -p "127.0.0.1:$PORT:8000" \
  -v /var/run/docker.sock:/var/run/docker.sock \
  -v "$cfg/jupyterhub_config.py:/srv/jupyterhub/jupyterhub_config.py:ro" \
  "$HUB" >/dev/null

api() { curl -sS -H "Authorization: token $TOKEN" "$@"; }
for _ in $(seq 120); do
  api -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/hub/api/" 2>/dev/null | grep -q 200 && break
  sleep 1
done
t1=$(date +%s); echo "hub answered /hub/api after $((t1 - t0)) s"
api "http://127.0.0.1:$PORT/hub/api/" ; echo

api -X POST "http://127.0.0.1:$PORT/hub/api/users/smoke-user" >/dev/null
api -X POST -o /dev/null -w 'spawn request: %{http_code}\n' "http://127.0.0.1:$PORT/hub/api/users/smoke-user/server"
ok=
for _ in $(seq 120); do
  code=$(api -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/user/smoke-user/api/status" || true)
  [ "$code" = 200 ] && { ok=1; break; }
  sleep 1
done
t2=$(date +%s)
if [ -n "$ok" ]; then
  echo "single-user server answered through the proxy $((t2 - t1)) s after the spawn request:"
  api "http://127.0.0.1:$PORT/user/smoke-user/api/status"; echo
  api "http://127.0.0.1:$PORT/user/smoke-user/api/kernelspecs" | head -c 300; echo
  base="http://127.0.0.1:$PORT/user/smoke-user"
  if api "$base/api/kernelspecs" | grep -q '"spec"'; then
    kid=$(api -X POST -H 'Content-Type: application/json' -d '{"name":"python3"}' "$base/api/kernels" \
          | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    sleep 3
    echo "kernel $kid: $(api "$base/api/kernels/$kid" | head -c 200)"
    api -X DELETE -o /dev/null -w 'kernel delete: %{http_code}\n' "$base/api/kernels/$kid"
  fi
  echo "GET /user/smoke-user/lab: $(api -o /dev/null -w '%{http_code}' "$base/lab")"
  echo "SMOKE OK"
else
  echo "SMOKE FAILED (last code $code)"; $DOCKER logs cablab-smoke-hub 2>&1 | tail -40
  for c in $($DOCKER ps -aq --filter name=cablab-smoke-user); do $DOCKER logs "$c" 2>&1 | tail -20; done
  exit 1
fi
api -X DELETE -o /dev/null -w 'stop request: %{http_code}\n' "http://127.0.0.1:$PORT/hub/api/users/smoke-user/server"
