#!/bin/bash
# A recording stand-in for a system command (tests/test_hostile.py): appends its
# name and argv (unit-separated, one record per call) to the call log, prints
# canned output where a provisioner reads some, and changes nothing.
name=${0##*/}
{ printf '%s\x1f' "$name" "$@"; printf '\x1e'; } >>/var/log/cablab-stub-calls
args="$*"
case "$name" in
  touch) : >/tmp/cablab-injected ;;
  docker)
    case "$args" in
      "info --format {{.Swarm.LocalNodeState}}") echo inactive ;;
      "info --format {{.Swarm.ControlAvailable}}") echo "${STUB_CONTROL:-true}" ;;
      "info --format {{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}"*) echo "inactive ${STUB_CONTROL:-true}" ;;
      "node inspect self --format"*) echo "stubnode " ;;
      "info --format {{.Driver}}") echo "${STUB_DRIVER:-overlay2}" ;;
      "version --format {{.Server.Version}}") echo 20.10.24 ;;
      "network inspect"*) exit 1 ;;
      "image inspect --format {{.Id}} "*) [ -s /var/lib/cablab-stub-image ] || exit 1; cat /var/lib/cablab-stub-image ;;
      "image inspect --format {{index .Config.Labels \"org.cablab.jupyterhub\"}} "*)
        # the version label of cablab's hub image; an image without it (built elsewhere) prints nothing
        [ -s /var/lib/cablab-stub-image ] || exit 1; cat /var/lib/cablab-stub-jupyterhub-label 2>/dev/null || true ;;
      "image inspect"*) [ -e /var/lib/cablab-stub-image ] || exit 1 ;;
      "load"* | "pull"* | "build"*) [ -s /var/lib/cablab-stub-image ] || echo sha256:stub1 >/var/lib/cablab-stub-image ;;
      "run --rm --network none "*" jupyterhub --version") cat /var/lib/cablab-stub-jupyterhub 2>/dev/null || echo 6.1.1 ;;
      "config ls"* | "secret ls"*) cat "/var/lib/cablab-stub-$1s" 2>/dev/null || true ;;
      "image ls -q --filter dangling=true"*) cat /var/lib/cablab-stub-dangling 2>/dev/null || true ;;
      "image prune"*)
        grep -xFf /var/lib/cablab-stub-inuse /var/lib/cablab-stub-dangling >/var/lib/cablab-stub-left 2>/dev/null || true
        mv /var/lib/cablab-stub-left /var/lib/cablab-stub-dangling ;;
      "service ps"*"{{.Name}} {{.CurrentState}}"*)  # services_running: a task line per service named
        for a in "${@:3}"; do case "$a" in --*) break ;; *) echo "$a.1 Running 1 second ago" ;; esac; done ;;
      "service ps"*) echo "Running 1 second ago" ;;
      "service inspect"*) [ -e /var/lib/cablab-stub-service ] || exit 1 ;;
      "service logs"*)  # the hub task's lines; none to give when the stub says so
        [ ! -e /var/lib/cablab-stub-nologs ] || { echo "Error: no logs" >&2; exit 1; }
        # the stream's end never comes (docker/cli#4678): the lines, then a wait
        [ ! -e /var/lib/cablab-stub-logs-hang ] || { echo "cablab_hub.1.stubtask@stubnode    | partial line"; exec tail -f /dev/null; }
        echo "2026-11-28T10:00:00.000000000Z cablab_hub.1.stubtask@stubnode    | [I JupyterHub app:1] stub hub line" ;;
      "stack deploy"*) : >/var/lib/cablab-stub-service ;;
      "swarm join-token"*) echo SWMTKN-stub ;;
    esac ;;
  exportfs) [ "$args" != -s ] || cat /var/lib/cablab-stub-exports 2>/dev/null || true ;;
  rpm)  # installed: only the version query after an install (the docker.version pin's lock)
    [ "$1 $2" = "-q --qf" ] || exit 1
    echo "3:${STUB_PIN:-24.0}.0-1.el9" ;;
  dpkg-query | blkid) exit 1 ;;
  dpkg) echo amd64 ;;
  apt-cache) echo " docker-ce | 5:${STUB_PIN:-24.0}.0-1~debian.12~bookworm | https://download.docker.com stable/amd64 Packages" ;;
  dnf) [ "$1" = list ] && echo "docker-ce.x86_64 3:${STUB_PIN:-24.0}.0-1.el9 docker-ce-stable" ;;
  firewall-cmd)
    case "$args" in
      --state) [ "${STUB_FW:-firewalld}" = firewalld ] || exit 1 ;;
      *--get-zones*) echo public ;;
      *--query-*) exit 1 ;;
    esac ;;
  ufw)
    case "$args" in
      status) echo "Status: active" ;;
      allow*) echo "Rule added" ;;
    esac ;;
  hostname) [ $# -gt 0 ] || echo localhost ;;
  certbot)
    while [ $# -gt 1 ] && [ "$1" != -d ]; do shift; done
    if [ "${1:-}" = -d ]; then
      mkdir -p "/etc/letsencrypt/live/$2"
      echo pem >"/etc/letsencrypt/live/$2/fullchain.pem"
      echo pem >"/etc/letsencrypt/live/$2/privkey.pem"
    fi ;;
  curl)
    while [ $# -gt 1 ] && [ "$1" != -o ]; do shift; done
    [ "${1:-}" != -o ] || echo downloaded >"$2" ;;
  mountpoint | vgs) exit 1 ;;
  lvs)
    case "$args" in
      *lv_profile*) echo docker-thinpool ;;
      *lv_active*) echo active ;;
      *) exit 1 ;;
    esac ;;
  lsblk) echo disk ;;
  xfs_info) echo "naming =version 2 bsize=4096 ascii-ci=0, ftype=1" ;;
  findmnt)
    while [ $# -gt 1 ] && [ "$1" != --target ]; do shift; done
    awk -F '\t' -v t="$2" '$1 == t {print $2}' /etc/cablab-stub-findmnt ;;
  stat)
    if [ "$2" = '%d:%i' ]; then echo 1:1; else exec /usr/bin/stat "$@"; fi ;;
esac
exit 0
