#!/bin/bash
# Run one rendered provisioner twice, as root, in throw-away namespaces (tests/test_steps_family.py),
# as on a host of FAMILY: the root file system is an overlay on a tmpfs (every write is thrown away
# at the end, kept between the two runs), /etc/os-release is OS_RELEASE, and every command that
# touches the system is the stateful recording stub (stub.sh). Not a real EL or Debian host.
# usage: unshare -m -u -i -n -p -f --propagation private sandbox.sh WORK SCRIPT FAMILY
set -euo pipefail
work=$1 script=$2 family=$3
here=$(cd "$(dirname "$0")" && pwd)
mount -t tmpfs sandbox "$work"
mkdir "$work/upper" "$work/work" "$work/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$work/upper,workdir=$work/work" "$work/root"
r=$work/root
mount -t tmpfs dev "$r/dev"
for d in null zero urandom random; do : >"$r/dev/$d"; mount --bind "/dev/$d" "$r/dev/$d"; done
ln -s /proc/self/fd "$r/dev/fd"
mount -t proc proc "$r/proc"
mount -t tmpfs run "$r/run"
mkdir -p "$r/run/systemd/system"  # a systemd host (the scripts reload units they change)
mount -t tmpfs tmp "$r/tmp"
mount -t tmpfs docker "$r/var/lib/docker"
rm -rf "$r/var/lib/cablab" "$r/var/lib/cablab-stub" "$r/etc/cablab" "$r/var/log/cablab-provision.log"
mkdir -p "$r/cablab-stubs"
for name in $STUB_NAMES; do ln -s /cablab-stub "$r/cablab-stubs/$name"; done
cp "$here/stub.sh" "$r/cablab-stub"
chmod 0755 "$r/cablab-stub"
# The family: dnf hosts have no apt-get; apt hosts no dnf and no SELinux tools.
if [ "$family" = dnf ]; then
  rm -f "$r/usr/bin/apt-get" "$r/cablab-stubs/apt-get" "$r/cablab-stubs/apt-mark"
else
  for name in dnf rpm getenforce selinuxenabled getsebool setsebool restorecon subscription-manager; do
    rm -f "$r/cablab-stubs/$name"
  done
fi
rm -f "$r/etc/os-release"
printf '%s\n' "$OS_RELEASE" >"$r/etc/os-release"
printf '%s' "$STUB_FINDMNT" >"$r/etc/cablab-stub-findmnt"
mkdir -p "$r/etc/cablab/secrets" "$r/etc/cablab/swarm"
for role in worker manager; do echo SWMTKN-stub >"$r/etc/cablab/swarm/$role.token"; done
for s in $STUB_SECRETS; do echo secret >"$r/etc/cablab/secrets/$s"; done
while IFS= read -r f; do [ -z "$f" ] || { mkdir -p "$r$(dirname "$f")"; : >"$r$f"; }; done <<<"$STUB_FILES"
while IFS= read -r f; do [ -z "$f" ] || { mkdir -p "$r$(dirname "$f")"; rm -f "$r$f"; mknod "$r$f" b 7 250; }; done <<<"$STUB_DISKS"
# What the host already has (stub state, as stub.sh keeps it), e.g. "fs /dev/vdb": a filesystem on the disk.
mkdir -p "$r/var/lib/cablab-stub/mark"
while IFS= read -r m; do [ -z "$m" ] || : >"$r/var/lib/cablab-stub/mark/$(printf '%s' "$m" | tr '/ ' '%_')"; done <<<"${STUB_MARKS:-}"
# Files the host already has (STUB_PRE: a directory laid over the root), e.g. an older daemon.json.
if [ -n "${STUB_PRE:-}" ]; then cp -a "$STUB_PRE/." "$r/"; fi
cp "$script" "$r/provision.sh"
for run in 1 2; do
  : >"$r/var/log/cablab-stub-calls"
  rc=0
  chroot "$r" /usr/bin/env -i PATH=/cablab-stubs:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    CABLAB_LOG=/var/log/cablab-provision.log CABLAB_HUB_TIMEOUT=5 \
    STUB_CONTROL="$STUB_CONTROL" STUB_PIN="$STUB_PIN" STUB_FW="$STUB_FW" STUB_DRIVER="$STUB_DRIVER" \
    STUB_LOADS="$STUB_LOADS" STUB_SELINUX="$STUB_SELINUX" \
    /bin/bash /provision.sh >"$work/out" 2>&1 || rc=$?
  printf 'run=%s rc=%s\n' "$run" "$rc"
  cat "$r/var/log/cablab-stub-calls"
  printf '\x1d'
  cat "$work/out"
  printf '\x1d'
  cat "$r/var/lib/cablab/last-run.json" 2>/dev/null || true
  printf '\x1c'
done
