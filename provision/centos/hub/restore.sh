#!/usr/bin/env bash
# Restore the hub of cluster lab-centos from a directory made by backup.sh:
#   /opt/cablab/hub/restore.sh BACKUP_DIR [--with-config]
# Checks the manifest's sums, saves the hub's log into /var/log/cablab (the newest 10
# kept), stops the hub (the proxy and the users' servers keep running), puts the database back and the homes' files (files
# made since the backup stay), and with --with-config also the secrets and this bundle (a rebuilt hub
# host), then starts the hub again (with --with-config, or where it had no service: deploys the
# stack again). Rendered by cablab-cluster from centos.yml.
set -euo pipefail
umask 077
usage="usage: $0 BACKUP_DIR [--with-config]"
src=${1:?$usage}
config=no
if [ "${2:-}" = --with-config ]; then
  config=yes
elif [ -n "${2:-}" ]; then
  echo "$usage" >&2
  exit 2
fi
[ -f "$src/manifest.txt" ] || { echo "$src holds no manifest.txt: not a backup of backup.sh" >&2; exit 2; }
(cd "$src" && sed -n '/^files (sha256):$/,$p' manifest.txt | tail -n +2 | sha256sum --quiet -c -) \
  || { echo "$src: a file does not match its sum in manifest.txt" >&2; exit 1; }

# Stop the hub: nothing may write the database while it is replaced.
service=cablab_hub
stopped=no
if docker service inspect "$service" >/dev/null 2>&1; then
  # Scaling to 0 removes the hub's task, and its lines go from `docker service logs` with it: keep them.
  logs=/var/log/cablab
  install -d -m 0700 "$logs"
  log="$logs/hub-before-restore-$(date -u +%Y%m%dT%H%M%SZ).log"
  # Bounded: `docker service logs` can hang at the end of its stream (docker/cli#4678).
  if timeout 60 docker service logs --timestamps --no-trunc "$service" >"$log" 2>&1; then
    echo "saved the hub's log to $log"
  else
    echo "could not save all of the hub's log (docker service logs failed, or took over 60 s; what it gave is in $log); restoring anyway" >&2
  fi
  # The newest 10 saved logs stay (their names sort by time); older ones go. Names as
  # NUL-separated records (nothing in a name is read as a separator); a failure here stops nothing.
  find "$logs" -maxdepth 1 -type f -name 'hub-before-restore-*Z.log' -print0 | LC_ALL=C sort -rz \
    | tail -zn +11 | xargs -0r rm -f -- \
    || echo "could not remove the older saved logs in $logs; restoring anyway" >&2
  docker service scale --detach=false "$service=0" >/dev/null
  stopped=yes
fi
data=/var/lib/cablab/hub
install -d -m 0700 "$data"
db=jupyterhub.sqlite
rm -f "$data/$db-journal" "$data/$db-wal" "$data/$db-shm"
install -m 0600 "$src/$db" "$data/$db"
uids=org-uids.json
if [ -f "$src/$uids" ]; then
  install -m 0600 "$src/$uids" "$data/$uids"
fi
if [ -f "$src/homes.tar.gz" ]; then
  tar -C /srv/nfs/homes --numeric-owner -xpzf "$src/homes.tar.gz"
fi
if [ "$config" = yes ]; then
  install -d -m 0700 /etc/cablab/secrets
  tar -C /etc/cablab/secrets -xzf "$src/secrets.tar.gz"
  tar -C /opt/cablab/hub -xzf "$src/bundle.tar.gz"
fi
if [ "$config" = no ] && [ "$stopped" = yes ]; then
  # The stack as it stands (the same bundle and secrets): its hub back to one replica. A full
  # `docker stack deploy` would re-read and re-apply every service (~9 s more under emulation).
  docker service scale --detach "$service=1" >/dev/null
else
  # New secrets or bundle, or no hub service: deploy.sh deploys again once its record is gone.
  rm -f "$data/deployed"
  /opt/cablab/hub/deploy.sh >/dev/null
fi
echo "restored $src; the hub is starting (docker service ps $service)"
