#!/bin/bash
# A recording, stateful stand-in for a system command (tests/test_steps_family.py): appends the
# running step, its name and argv (unit-separated, one record per call) to the call log, and keeps
# what the command would change in /var/lib/cablab-stub (packages, holds, locks, services, booleans,
# volumes, mounts, the swarm), so that a second run of the same script sees the first run's host.
# Its status is the answer's (the case's last command). It is not the OS: it answers the questions the provisioners ask, the way the real tools answer them.
name=${0##*/}
case "$name" in
  stat | dpkg) ;;  # file attributes and the architecture: reads only, not worth a fixture line
  *) { printf '%s\x1f' "${CABLAB_STUB_STEP:-setup}" "$name" "$@"; printf '\x1e'; } >>/var/log/cablab-stub-calls ;;
esac
S=/var/lib/cablab-stub
mkdir -p "$S"/pkg "$S"/on "$S"/mark
key() { printf '%s' "$*" | tr '/ ' '%_'; }
has() { [ -e "$S/mark/$(key "$@")" ]; }
mark() { : >"$S/mark/$(key "$@")"; }
# heartbeat ARGS: the swarm keeps --dispatcher-heartbeat Ns from `swarm init|update`, as ns.
heartbeat() {
  case "$1" in *"--dispatcher-heartbeat "*) ;; *) return 0 ;; esac
  local s=${1#*--dispatcher-heartbeat }; s=${s%% *}; s=${s%s}
  echo "$((s * 1000000000))" >"$S/heartbeat"
}
unmark() { rm -f "$S/mark/$(key "$@")"; }
installed() { [ -e "$S/pkg/$1" ]; }
install_pkg() { printf '%s\n' "$2" >"$S/pkg/$1"; }
args="$*"
case "$name" in
  dpkg-query)  # -W -f=FORMAT NAME
    installed "$3" || exit 1
    # dpkg's want flag is "hold" for a held package (apt-mark hold), "install" otherwise
    case "$2" in
      *Status*) if grep -qxF "$3" "$S/holds" 2>/dev/null; then echo "hold ok installed"; else echo "install ok installed"; fi ;;
      *) cat "$S/pkg/$3" ;;
    esac ;;
  rpm)  # -q NAME | -q --qf FORMAT NAME
    if [ "$2" = --qf ]; then installed "$4" || exit 1; echo "0:$(cat "$S/pkg/$4")"; else installed "$2"; fi ;;
  dpkg) echo amd64 ;;
  apt-get)
    [ "$1" = install ] || exit 0
    for a in "$@"; do
      case "$a" in install | -*) ;; *=*) install_pkg "${a%%=*}" "${a#*=}" ;; *) install_pkg "$a" 1.0-1 ;; esac
    done ;;
  apt-cache) echo " $2 | 5:${STUB_PIN}.0-1~debian.12~bookworm | https://download.docker.com/linux/debian bookworm/stable amd64 Packages" ;;
  apt-mark)
    case "$1" in
      showhold) cat "$S/holds" 2>/dev/null || true ;;
      hold) echo "$2" >>"$S/holds" ;;
      unhold) grep -vxF "$2" "$S/holds" >"$S/holds.new" || true; mv "$S/holds.new" "$S/holds" ;;
    esac ;;
  dnf)
    while [ "${1:-}" = -q ]; do shift; done
    case "$1" in
      install)
        shift
        for a in "$@"; do
          case "$a" in
            -*) ;;
            https://*epel-release*) install_pkg epel-release 9-1.el9 ;;
            *-[0-9]*) n=${a%%-[0-9]*}; install_pkg "$n" "${a#"$n"-}" ;;
            *) install_pkg "$a" 1.0-1.el9 ;;
          esac
        done ;;
      list) echo "$3.x86_64 3:${STUB_PIN}.0-1.el9 docker-ce-stable" ;;
      versionlock)
        case "$2" in
          list) cat "$S/locks" 2>/dev/null || true ;;
          add) echo "$3-0:$(cat "$S/pkg/$3").*" >>"$S/locks" ;;
          delete) grep -v "^$3-[0-9]" "$S/locks" >"$S/locks.new" || true; mv "$S/locks.new" "$S/locks" ;;
        esac ;;
      repolist) printf '%s\n' appstream baseos extras; cat "$S/repos" 2>/dev/null || true ;;
      config-manager) echo "${@: -1}" >>"$S/repos" ;;
    esac ;;
  subscription-manager) echo "$3" >>"$S/repos" ;;
  systemctl)
    [ "$1" != --quiet ] || shift
    case "$1" in
      is-enabled) has enabled "${@: -1}" ;;
      is-active)
        case "${@: -1}" in
          firewalld.service) [ "${STUB_FW:-none}" = firewalld ] ;;  # the steps' firewalld_running
          *) has active "${@: -1}" ;;
        esac ;;
      enable) mark enabled "${@: -1}" ;;  # enable [--no-reload] UNIT
      start | restart | reload) mark active "$2" ;;
      stop) shift; for u in "$@"; do unmark active "$u"; done ;;
      cat) [ "$2" = certbot.timer ] && installed certbot ;;
    esac ;;
  docker)
    case "$args" in
      "info --format {{.Swarm.LocalNodeState}}") if has swarm; then echo active; else echo inactive; fi ;;
      "info --format {{.Swarm.ControlAvailable}}") echo "${STUB_CONTROL:-true}" ;;
      # the steps' swarm_facts; the heartbeat is dockerd's own default (5 s, in ns as `docker info`
      # prints it) until init or update sets one
      "info --format {{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}"*)
        if ! has swarm; then echo "inactive false"
        elif [ "${STUB_CONTROL:-true}" = true ]; then echo "active true $(cat "$S/heartbeat" 2>/dev/null || echo 5000000000)"
        else echo "active false"; fi ;;
      "info --format {{.Driver}}") echo "${STUB_DRIVER:-overlay2}" ;;
      "version --format {{.Server.Version}}") echo "${STUB_PIN}.0" ;;
      "swarm init"* | "swarm join"*) mark swarm; heartbeat "$args" ;;
      "swarm update"*) heartbeat "$args" ;;
      "swarm join-token"*) echo SWMTKN-stub ;;
      "network inspect"*) has network "${@: -1}" || exit 1; cat "$S/mark/$(key network "${@: -1}")" ;;
      "network create"*)
        opts="overlay false plain"
        case "$args" in *--attachable*) opts="overlay true plain" ;; esac
        case "$args" in *encrypted*) opts="${opts% plain} encrypted" ;; esac
        mark network "${@: -1}"; echo "$opts" >"$S/mark/$(key network "${@: -1}")" ;;
      "node inspect self --format"*) if has nodelabel; then echo "stubnode true"; else echo "stubnode "; fi ;;
      "node update --label-add"*) mark nodelabel ;;
      "node ls"*) if has nodelabel; then echo stubnode; fi ;;
      "image inspect --format {{.Id}} "*) has image "${@: -1}" && echo "sha256:$(key image "${@: -1}")" ;;
      # cablab's hub image (every hub image here is built from its Dockerfile) tells its JupyterHub
      "image inspect --format {{index .Config.Labels \"org.cablab.jupyterhub\"}} "*) echo 6.1.1 ;;
      "image inspect --format"*) [ -f "$S/mark/$(key image "${@: -1}")" ] && cat "$S/mark/$(key image "${@: -1}")" ;;
      "image inspect"*) has image "${@: -1}" ;;
      "pull"*) mark image "$2" ;;
      "build"*)
        sum=${args#*org.cablab.dockerfile-sha256=}; sum=${sum%% *}
        ref=${args#* -t }; ref=${ref%% *}
        mark image "$ref"; echo "$sum" >"$S/mark/$(key image "$ref")" ;;
      "load"*) while IFS=' ' read -r tarball ref; do [ "$tarball" != "$3" ] || mark image "$ref"; done <<<"$STUB_LOADS" ;;
      "stack deploy"*) mark stack ;;
      "service inspect"*) has stack ;;
      "service ps"*"{{.Name}} {{.CurrentState}}"*)  # services_running: a task line per service named
        for a in "${@:3}"; do case "$a" in --*) break ;; *) echo "$a.1 Running 1 second ago" ;; esac; done ;;
      "service ps"*) echo "Running 1 second ago" ;;
    esac ;;
  getenforce) echo "${STUB_SELINUX:-Enforcing}" ;;
  selinuxenabled) : ;;
  getsebool) echo "$1 --> $(if has sebool "$1"; then echo on; else echo off; fi)" ;;
  setsebool) mark sebool "$2" ;;
  restorecon)
    if [ "$1" = -n ]; then has relabeled "${@: -1}" || echo "Would relabel ${*: -1} from system_u:object_r:unlabeled_t:s0 to system_u:object_r:container_var_lib_t:s0"
    else mark relabeled "${@: -1}"; fi ;;
  firewall-cmd)
    case "$args" in
      --state) [ "${STUB_FW:-none}" = firewalld ] || exit 1 ;;
      *--get-zones*) echo "public $(cat "$S/zones" 2>/dev/null || true)" ;;
      --get-default-zone) echo public ;;
      *--new-zone=*) echo "${args##*--new-zone=}" >>"$S/zones" ;;
      *--list-* | *--add-* | *--remove-*)
        # firewalld's permanent configuration: $S/fw/<zone>.<kind>, one item a line (zone default: public)
        zone=public op= kind= value=
        for a in "$@"; do
          case $a in
            --zone=*) zone=${a#--zone=} ;;
            --list-*) op=list kind=${a#--list-} kind=${kind%s} ;;
            --add-*=*) op=add kind=${a#--add-} value=${a#*=} kind=${kind%%=*} ;;
            --remove-*=*) op=remove kind=${a#--remove-} value=${a#*=} kind=${kind%%=*} ;;
          esac
        done
        f=$S/fw/$zone.$kind
        mkdir -p "$S/fw"
        touch "$f"
        case $op in
          list) tr '\n' ' ' <"$f"; echo ;;
          add) grep -qxF "$value" "$f" || echo "$value" >>"$f" ;;
          remove) grep -vxF "$value" "$f" >"$f.new" || true; mv "$f.new" "$f" ;;
        esac ;;
    esac ;;
  ufw) exit 1 ;;
  hostname) if [ $# -eq 0 ]; then cat "$S/hostname" 2>/dev/null || echo localhost; else echo "$1" >"$S/hostname"; fi ;;
  certbot)
    while [ $# -gt 1 ] && [ "$1" != -d ]; do shift; done
    mkdir -p "/etc/letsencrypt/live/$2"
    echo pem >"/etc/letsencrypt/live/$2/fullchain.pem"
    echo key >"/etc/letsencrypt/live/$2/privkey.pem" ;;
  curl)
    while [ $# -gt 1 ] && [ "$1" != -o ]; do shift; done
    [ "${1:-}" != -o ] || { mkdir -p "$(dirname "$2")"; echo downloaded >"$2"; } ;;
  vgs) has vg "$1" ;;
  pvcreate) mark pv "$1" ;;
  vgcreate) mark vg "$1" ;;
  lvcreate)  # lvcreate [-y] [--wipesignatures y] -n NAME (-l|-L) SIZE VG, in any order
    lv="" vg=""
    while [ $# -gt 0 ]; do
      case "$1" in -y) ;; -n) lv=$2; shift ;; -l | -L | --wipesignatures) shift ;; *) vg=$1 ;; esac
      shift
    done
    mark lv "$vg/$lv" ;;
  lvconvert) : ;;
  lvs)
    case "$args" in
      *lv_profile*) has profile "${@: -1}" && echo "  docker-thinpool" ;;
      *lv_active*) has lvactive "${@: -1}" && echo "  active" ;;
      *) has lv "$1" ;;
    esac ;;
  lvchange) case "$args" in *--metadataprofile*) mark profile "${@: -1}" ;; -ay*) mark lvactive "${@: -1}" ;; esac ;;
  mkfs.xfs) mark fs "${@: -1}" ;;
  blkid) has fs "${@: -1}" || exit 2; echo xfs ;;
  lsblk) echo disk ;;
  mountpoint) has mounted "${@: -1}" ;;
  mount) [ $# -ne 1 ] || mark mounted "$1" ;;
  umount) : ;;
  xfs_info) echo "naming   =version 2 bsize=4096 ascii-ci=0, ftype=1" ;;
  findmnt)
    while [ $# -gt 1 ] && [ "$1" != --target ]; do shift; done
    awk -F '\t' -v t="$2" '$1 == t {print $2}' /etc/cablab-stub-findmnt ;;
  exportfs)
    case "$1" in
      -ra) mark exported ;;
      -s) if has exported; then awk '{for (i = 2; i <= NF; i++) print $1 "  " $i}' /etc/exports.d/cablab.exports; fi ;;
    esac ;;
  timedatectl) echo yes ;;
  stat)
    if [ "$2" = '%d:%i' ]; then echo 1:1; else exec /usr/bin/stat "$@"; fi ;;
esac
