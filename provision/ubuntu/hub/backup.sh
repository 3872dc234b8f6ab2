#!/usr/bin/env bash
# Back up the hub of cluster lab-ubuntu into a new directory below TARGET:
#   /opt/cablab/hub/backup.sh TARGET [--without-homes]
# What: the hub's database (an online, consistent copy made with sqlite's backup API inside
# the running hub, or the file itself while the hub is stopped), the secrets directory, this
# bundle, and the users' homes (the home share, on this host); a manifest
# with the time and a sha256 of every file. Prints the backup's directory last.
# Rendered by cablab-cluster from ubuntu.yml.
set -euo pipefail
umask 077
usage="usage: $0 TARGET [--without-homes]"
target=${1:?$usage}
homes=yes
if [ "${2:-}" = --without-homes ]; then
  homes=no
elif [ -n "${2:-}" ]; then
  echo "$usage" >&2
  exit 2
fi
cluster=lab-ubuntu
stamp=$(date -u +%Y%m%dT%H%M%SZ)
dest="$target/cablab-hub-$cluster-$stamp"
install -d -m 0700 "$target"
mkdir -m 0700 "$dest"

# The database: sqlite's online backup inside the running hub (it keeps writing meanwhile).
data=/var/lib/cablab/hub
db=jupyterhub.sqlite
copy=.backup.sqlite  # the online copy's name while it is made, beside the database
uids=org-uids.json
hub=$(docker ps -q --filter label=com.docker.swarm.service.name=cablab_hub | head -n 1)
if [ -n "$hub" ]; then
  docker exec "$hub" python3 /srv/jupyterhub/cablab_backup.py backup-db \
    /srv/jupyterhub/data/jupyterhub.sqlite /srv/jupyterhub/data/"$copy"
  mv "$data/$copy" "$dest/$db"
else
  cp -p "$data/$db" "$dest/$db"  # the hub is stopped: the file is consistent
fi
# The uids the hub gave organisation members (their homes belong to them).
if [ -f "$data/$uids" ]; then
  cp -p "$data/$uids" "$dest/$uids"
fi

tar -C /etc/cablab/secrets -czf "$dest/secrets.tar.gz" .
tar -C /opt/cablab/hub -czf "$dest/bundle.tar.gz" .
if [ "$homes" = yes ]; then
  # Owners and modes kept as numbers (each user's own uid).
  tar -C /srv/nfs/homes --numeric-owner -cpzf "$dest/homes.tar.gz" .
fi

spec=ubuntu.yml
{
  echo "cluster: $cluster"
  echo "created: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(hostname)"
  echo "rendered from: $spec"
  echo "hub: ${hub:-stopped}"
  echo "files (sha256):"
  (cd "$dest" && sha256sum -- *)
} >"$dest/.manifest.txt"
mv "$dest/.manifest.txt" "$dest/manifest.txt"
echo "$dest"
