#!/usr/bin/env bash
# Prepare this host for the cablab lab: packages, libvirt (QEMU/TCG) and a Docker daemon.
#
# Idempotent: every step checks first and logs one line; a second run changes nothing and
# says so. Made for a root shell on Debian 12 where PID 1 is not systemd, so the daemons are
# started by hand (pid files in /run). What this script started is recorded in
# $STATE_DIR/started so that lab/host-teardown.sh stops exactly that and nothing else.
set -euo pipefail

STATE_DIR=/run/cablab-host
DOCKERD_LOG=/var/log/cablab-dockerd.log
DOCKERD_PID=/run/docker.pid
QEMU_CONF=/etc/libvirt/qemu.conf
LIBVIRT_URI=qemu:///system
POOL_DIR=/var/lib/libvirt/images

# Host packages. Installed without Recommends (they would add ~340 packages: guestfs, GUI
# codecs, exim...). debootstrap, fdisk, e2fsprogs and qemu-utils are for lab/boxes/build.sh;
# rsync for vagrant's rsync synced folders.
PACKAGES=(
  vagrant vagrant-libvirt libvirt-daemon-system qemu-system-x86 qemu-utils dnsmasq-base
  docker.io debootstrap fdisk e2fsprogs rsync iptables procps util-linux ca-certificates
  chromium # the cluster checks' real browser (Playwright drives /usr/bin/chromium)
  pebble   # the centos lab's ACME server (pebble + pebble-challtestsrv, started by lab/pebble.py)
)

changes=0
log() { printf '[host-setup] %s\n' "$*"; }
changed() { changes=$((changes + 1)); log "$*"; }
die() { printf '[host-setup] ERROR: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root"
mkdir -p "$STATE_DIR"

# pid_alive PIDFILE NAME: the pid file names a live process whose command is NAME.
pid_alive() {
  local pid
  [[ -s $1 ]] || return 1
  pid=$(<"$1")
  [[ $pid =~ ^[0-9]+$ ]] && [[ -r /proc/$pid/comm ]] && [[ $(<"/proc/$pid/comm") == "$2" ]]
}

record_started() { # NAME PIDFILE
  grep -qsx "$1 $2" "$STATE_DIR/started" || echo "$1 $2" >>"$STATE_DIR/started"
}

wait_for() { # SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2 i
  shift 2
  for ((i = 0; i < limit; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  die "$what did not answer within ${limit}s"
}

# --- 1. packages --------------------------------------------------------------------------
missing=()
for p in "${PACKAGES[@]}"; do
  [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == 'install ok installed' ]] || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  log "packages: all ${#PACKAGES[@]} present, nothing to install"
else
  log "packages: installing ${missing[*]} (apt-get update first)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # No init system to talk to: keep maintainer scripts from starting daemons; we start them
  # below with our own pid files. Only add a policy-rc.d if there is none.
  policy_added=
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    policy_added=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/var/log/cablab-host-apt.log 2>&1 ||
    { tail -n 30 /var/log/cablab-host-apt.log >&2; die "apt-get install failed (log: /var/log/cablab-host-apt.log)"; }
  if [[ -n $policy_added ]]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
  changed "packages: installed ${#missing[@]} (log: /var/log/cablab-host-apt.log)"
fi

# --- 2. libvirt runs QEMU as root ---------------------------------------------------------
# /dev/kvm is 0600 root and unusable (no vmx): as libvirt-qemu, libvirtd keeps re-probing
# QEMU and `vagrant up` hangs at "Creating domain".
qemu_conf_changed=
if grep -qx 'user = "root"' "$QEMU_CONF" && grep -qx 'group = "root"' "$QEMU_CONF" &&
   [[ $(grep -cE '^[[:space:]]*(user|group)[[:space:]]*=' "$QEMU_CONF") -eq 2 ]]; then
  log "qemu.conf: user/group already root"
else
  sed -i -E '/^[[:space:]]*(user|group)[[:space:]]*=/d' "$QEMU_CONF"
  printf '# cablab lab (lab/host-setup.sh): run QEMU as root\nuser = "root"\ngroup = "root"\n' >>"$QEMU_CONF"
  qemu_conf_changed=1
  changed "qemu.conf: set user = \"root\", group = \"root\""
fi

# --- 3. virtlogd, libvirtd ----------------------------------------------------------------
if pid_alive /run/virtlogd.pid virtlogd; then
  log "virtlogd: already running (pid $(</run/virtlogd.pid))"
else
  virtlogd -d
  wait_for 10 virtlogd pid_alive /run/virtlogd.pid virtlogd
  record_started virtlogd /run/virtlogd.pid
  changed "virtlogd: started (pid $(</run/virtlogd.pid))"
fi

if pid_alive /run/libvirtd.pid libvirtd; then
  if [[ -n $qemu_conf_changed ]]; then
    if grep -qsx 'libvirtd /run/libvirtd.pid' "$STATE_DIR/started"; then
      kill "$(</run/libvirtd.pid)"
      for _ in $(seq 20); do pid_alive /run/libvirtd.pid libvirtd || break; sleep 0.5; done
      libvirtd -d
      wait_for 30 libvirtd pid_alive /run/libvirtd.pid libvirtd
      changed "libvirtd: restarted for the new qemu.conf (pid $(</run/libvirtd.pid))"
    else
      log "libvirtd: WARNING running but not started by this script: restart it to apply qemu.conf"
    fi
  else
    log "libvirtd: already running (pid $(</run/libvirtd.pid))"
  fi
else
  libvirtd -d
  wait_for 30 libvirtd pid_alive /run/libvirtd.pid libvirtd
  record_started libvirtd /run/libvirtd.pid
  changed "libvirtd: started (pid $(</run/libvirtd.pid))"
fi
wait_for 60 "virsh -c $LIBVIRT_URI version" virsh -c "$LIBVIRT_URI" version
log "libvirt: answers ($(virsh -c "$LIBVIRT_URI" version 2>/dev/null | sed -n 's/^Running hypervisor: //p'))"

# vagrant-libvirt keeps box images and VM disks in the pool "default".
if pool_info=$(virsh -c "$LIBVIRT_URI" pool-info default 2>/dev/null); then
  if [[ $pool_info =~ State:[[:space:]]+running ]]; then
    log "libvirt pool default: present and running"
  else
    virsh -c "$LIBVIRT_URI" pool-start default >/dev/null
    changed "libvirt pool default: started"
  fi
else
  mkdir -p "$POOL_DIR"
  virsh -c "$LIBVIRT_URI" pool-define-as default dir --target "$POOL_DIR" >/dev/null
  virsh -c "$LIBVIRT_URI" pool-start default >/dev/null
  virsh -c "$LIBVIRT_URI" pool-autostart default >/dev/null
  changed "libvirt pool default: defined at $POOL_DIR and started"
fi

# --- 4. dockerd (Debian's docker.io) ------------------------------------------------------
# Default socket /var/run/docker.sock, so Debian's /usr/bin/docker (20.10) and the host's
# /usr/local/bin/docker (newer CLI, negotiates the API down) both reach it.
DOCKER_CLI=/usr/bin/docker
[[ -x $DOCKER_CLI ]] || DOCKER_CLI=$(command -v docker)
if pid_alive "$DOCKERD_PID" dockerd; then
  log "dockerd: already running (pid $(<"$DOCKERD_PID"))"
else
  if "$DOCKER_CLI" info >/dev/null 2>&1; then
    die "a Docker daemon answers on the default socket but $DOCKERD_PID does not name it; not starting a second one"
  fi
  nohup setsid /usr/sbin/dockerd --pidfile "$DOCKERD_PID" >>"$DOCKERD_LOG" 2>&1 </dev/null &
  wait_for 60 "dockerd (log: $DOCKERD_LOG)" "$DOCKER_CLI" info
  record_started dockerd "$DOCKERD_PID"
  changed "dockerd: started (pid $(<"$DOCKERD_PID"), log $DOCKERD_LOG)"
fi
wait_for 60 "docker info" "$DOCKER_CLI" info
# Every docker client on PATH must reach it (a newer CLI negotiates the API version down).
for cli in $(printf '%s\n' "$DOCKER_CLI" "$(command -v docker)" | sort -u); do
  v=$("$cli" version --format '{{.Client.Version}} -> server {{.Server.Version}} (API {{.Server.APIVersion}})' 2>/dev/null) ||
    die "$cli cannot talk to dockerd"
  log "docker: $cli $v"
done

# --- summary ------------------------------------------------------------------------------
if ((changes == 0)); then
  log "nothing changed: host already set up"
else
  log "done: $changes change(s)"
fi
log "use: export VAGRANT_CHECKPOINT_DISABLE=1 VAGRANT_BOX_UPDATE_CHECK_DISABLE=1  (no outside calls from vagrant)"
