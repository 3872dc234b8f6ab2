#!/usr/bin/env bash
# Deploy (or roll) the hub stack cablab; prints "deployed" or "unchanged".
# Rendered by cablab-cluster from centos-dm.yml. Called by the provisioner and
# by the Let's Encrypt renewal hook.
# What is deployed: the configs, the secrets, the stack file and the hub image's ID (a rebuilt
# image under the same tag rolls the hub and the proxy). A new hub image on an existing
# database: the hub is backed up first (/opt/cablab/hub/backup.sh), and a new JupyterHub
# version stops the old hub and runs `jupyterhub upgrade-db` before the new one starts.
# Afterwards the stack's configs and secrets no service uses any more are removed.
set -euo pipefail
cd /opt/cablab/hub
log() { echo "deploy: $*" >&2; }
state=""
keep=""
# One sha256sum for every file, names taken apart in bash: the unchanged case (every provisioner
# run) forked ~40 processes here, 3.9 s on a lab VM.
sums=$(sha256sum jupyterhub_config.py cablab_hub.py cablab_backup.py cablab.json /etc/cablab/secrets/cookie_secret /etc/cablab/secrets/proxy_token /etc/cablab/secrets/metrics_token /etc/cablab/secrets/github_client_secret /etc/cablab/secrets/tls.crt /etc/cablab/secrets/tls.key /etc/cablab/secrets/lab_password stack.yml)
while read -r sum f; do
  sum=${sum:0:12}
  if [ "$f" = stack.yml ]; then
    state="$state stack=$sum"
    continue
  fi
  base=${f##*/}
  var=${base^^}
  var=CABLAB_SHA_${var//./_}
  export "$var=$sum"
  state="$state $var=$sum"
  keep="$keep cablab_${base//./_}_$sum"
done <<<"$sums"
hub_image=cablab/hub:lab
image_id=$(docker image inspect --format '{{.Id}}' "$hub_image" 2>/dev/null || true)
[ -n "$image_id" ] || { log "the hub image $hub_image is not on this host: run this host's provisioner"; exit 1; }
export CABLAB_HUB_IMAGE_ID=${image_id#sha256:}
state="$state image=$CABLAB_HUB_IMAGE_ID"
deployed=/var/lib/cablab/hub/deployed
if [ -f "$deployed" ] && [ "$(cat "$deployed")" = "$state" ] \
  && docker service inspect cablab_hub >/dev/null 2>&1; then
  echo unchanged
  exit 0
fi

record=/var/lib/cablab/hub-image
last_id="" last_version=""
if [ -f "$record" ]; then read -r last_id last_version <"$record" || true; fi
version=$last_version
if [ "$last_id" != "$CABLAB_HUB_IMAGE_ID" ]; then
  # The image's label (cablab's hub image, checked at its build), else the image itself (any other).
  version=$(docker image inspect --format '{{index .Config.Labels "org.cablab.jupyterhub"}}' "$image_id")
  case $version in "" | "<no value>") version=$(docker run --rm --network none "$image_id" jupyterhub --version) ;; esac
  db=/var/lib/cablab/hub/jupyterhub.sqlite
  if [ -f "$db" ]; then
    backup=$(/opt/cablab/hub/backup.sh /var/backups/cablab/upgrades --without-homes)
    log "new hub image ${CABLAB_HUB_IMAGE_ID:0:12} (JupyterHub $version): backed up the hub to $backup"
    if [ "$version" != "$last_version" ]; then
      if docker service inspect cablab_hub >/dev/null 2>&1; then
        docker service scale --detach cablab_hub=0 >&2
        for _ in $(seq 60); do
          [ -n "$(docker ps -q --filter label=com.docker.swarm.service.name=cablab_hub)" ] || break
          sleep 2
        done
      fi
      docker run --rm --network none -v /var/lib/cablab/hub:/srv/jupyterhub/data "$image_id" \
        jupyterhub upgrade-db --db=sqlite:////srv/jupyterhub/data/jupyterhub.sqlite >&2
      log "upgraded the hub database from JupyterHub ${last_version:-unknown} to $version"
    fi
  fi
fi

docker stack deploy --resolve-image never --prune -c stack.yml cablab >&2
printf '%s\n' "$state" >"$deployed"
printf '%s %s\n' "$CABLAB_HUB_IMAGE_ID" "$version" >"$record"

# The secrets and configs of earlier deploys (content-named: a renewed certificate, a changed
# config) go once no service uses them any more (docker refuses to remove one still in use).
for kind in config secret; do
  docker "$kind" ls --filter label=com.docker.stack.namespace=cablab --format '{{.Name}}' |
    while read -r name; do
      case "$keep " in
        *" $name "*) ;;
        *) if docker "$kind" rm "$name" >/dev/null 2>&1; then log "removed the unused $kind $name"; fi ;;
      esac
    done
done
echo deployed
