#!/usr/bin/env bash
# Deploy (or roll) the hub stack cablab; prints "deployed" or "unchanged".
# Rendered by cablab-cluster from centos-dm.yml. Called by the provisioner and
# by the Let's Encrypt renewal hook.
set -euo pipefail
cd /opt/cablab/hub
state=""
for f in jupyterhub_config.py cablab_hub.py cablab.json /etc/cablab/secrets/cookie_secret /etc/cablab/secrets/proxy_token /etc/cablab/secrets/metrics_token /etc/cablab/secrets/github_client_secret /etc/cablab/secrets/tls.crt /etc/cablab/secrets/tls.key /etc/cablab/secrets/lab_password; do
  sum=$(sha256sum "$f" | cut -c1-12)
  var=CABLAB_SHA_$(basename "$f" | tr '[:lower:].' '[:upper:]_')
  export "$var=$sum"
  state="$state $var=$sum"
done
state="$state stack=$(sha256sum stack.yml | cut -c1-12)"
if [ -f /var/lib/cablab/hub/deployed ] && [ "$(cat /var/lib/cablab/hub/deployed)" = "$state" ] \
  && docker service inspect cablab_hub >/dev/null 2>&1; then
  echo unchanged
  exit 0
fi
docker stack deploy --resolve-image never --prune -c stack.yml cablab >&2
printf '%s\n' "$state" >/var/lib/cablab/hub/deployed
echo deployed
