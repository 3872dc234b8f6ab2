#!/bin/bash
# Run one rendered provisioner for real, as root, inside its own mount, UTS, IPC,
# network and PID namespaces (tests/test_hostile.py): the root file system is an
# overlay on a tmpfs (every write is thrown away), /dev, /run and /tmp are empty
# tmpfs, and every command that touches the system is a recording stub.
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
mount -t tmpfs tmp "$r/tmp"
mount -t tmpfs docker "$r/var/lib/docker"
mkdir -p "$r/cablab-stubs"
for name in $STUB_NAMES; do ln -s /cablab-stub "$r/cablab-stubs/$name"; done
cp "$here/stub.sh" "$r/cablab-stub"
chmod 0755 "$r/cablab-stub"
if [ "$family" = dnf ]; then rm -f "$r/usr/bin/apt-get" "$r/cablab-stubs/apt-get"; else rm -f "$r/cablab-stubs/dnf"; fi
printf '%s' "$STUB_FINDMNT" >"$r/etc/cablab-stub-findmnt"
mkdir -p "$r/etc/cablab/secrets"
for s in $STUB_SECRETS; do echo secret >"$r/etc/cablab/secrets/$s"; done
mkdir -p "$r/etc/cablab/swarm"
for role in worker manager; do echo SWMTKN-stub >"$r/etc/cablab/swarm/$role.token"; done
while IFS= read -r f; do [ -z "$f" ] || { mkdir -p "$r$(dirname "$f")"; : >"$r$f"; }; done <<<"$STUB_FILES"
while IFS= read -r f; do [ -z "$f" ] || { mkdir -p "$r$(dirname "$f")"; mknod "$r$f" b 7 250; }; done <<<"$STUB_DISKS"
cp "$script" "$r/provision.sh"
: >"$r/var/log/cablab-stub-calls"
rc=0
chroot "$r" /usr/bin/env -i PATH=/cablab-stubs:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
  CABLAB_LOG=/var/log/cablab-provision.log CABLAB_HUB_TIMEOUT=5 \
  STUB_CONTROL="$STUB_CONTROL" STUB_PIN="$STUB_PIN" STUB_FW="$STUB_FW" STUB_DRIVER="$STUB_DRIVER" \
  /bin/bash /provision.sh >"$work/out" 2>&1 || rc=$?
injected=no
if [ -e "$r/tmp/cablab-injected" ] || [ -e "$r/tmp/p" ]; then injected=yes; fi
printf 'rc=%s injected=%s\n' "$rc" "$injected"
cat "$r/var/log/cablab-stub-calls"
printf '\x1d'
cat "$work/out"
