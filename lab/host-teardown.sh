#!/usr/bin/env bash
# Stop the daemons that lab/host-setup.sh started, and only those: each is named with its pid
# file in /run/cablab-host/started, and is stopped only while that pid file still names a
# live process of that name. Daemons that were already running before host-setup are left alone.
set -euo pipefail

STATE_FILE=/run/cablab-host/started
log() { printf '[host-teardown] %s\n' "$*"; }

if [[ ! -s $STATE_FILE ]]; then
  log "nothing recorded in $STATE_FILE: nothing to stop"
  exit 0
fi

if command -v virsh >/dev/null && virsh -c qemu:///system version >/dev/null 2>&1; then
  running=$(virsh -c qemu:///system list --name 2>/dev/null | sed '/^$/d' || true)
  [[ -z $running ]] || log "WARNING: domains still running (vagrant destroy them first): ${running//$'\n'/ }"
fi

# Stop in reverse start order (dockerd, libvirtd, virtlogd).
mapfile -t entries < <(tac "$STATE_FILE")
for entry in "${entries[@]}"; do
  read -r name pidfile <<<"$entry"
  pid=$(cat "$pidfile" 2>/dev/null || true)
  if [[ $pid =~ ^[0-9]+$ ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]]; then
    kill "$pid"
    for _ in $(seq 40); do [[ -d /proc/$pid ]] || break; sleep 0.5; done
    if [[ -d /proc/$pid ]]; then
      log "$name: pid $pid still running after 20s (left alone)"
      continue
    fi
    log "$name: stopped (pid $pid)"
  else
    log "$name: not running"
  fi
  sed -i "\\|^$name $pidfile\$|d" "$STATE_FILE"
done
