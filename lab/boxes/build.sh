#!/usr/bin/env bash
# Build a Debian 12 (bookworm) vagrant-libvirt box from Debian's mirror, without any box
# download: debootstrap -> raw disk -> GRUB installed by one boot under QEMU/TCG -> qcow2 -> box.
#
#   lab/boxes/build.sh [baked|bare]        (default: baked)
#
# bare:  minimal system: systemd, ifupdown + DHCP on eth0, openssh, sudo, python3, cloud kernel,
#        GRUB on a serial console; user vagrant with Vagrant's insecure public key and
#        passwordless sudo; ed25519 SSH host key made on first boot; apt-daily timers masked.
# baked: bare + the packages the provisioners install (BAKED_PACKAGES), installed by chroot at
#        build time (~30 s here instead of ~7 min of apt under TCG in every VM). Services are
#        left as the Debian packages leave them (docker and nfs-server enabled, no swarm, no
#        exports, no daemon.json, nothing on /dev/vdb), so the provisioners' steps still apply;
#        except CABLAB_BOX_DISABLED_UNITS (default firewalld.service: the harness starts it
#        where the variant's distribution runs it, EL; Ubuntu and Debian run no firewall).
#        With CABLAB_BAKED_IMAGES (docker save tarballs, .tar or .tar.gz), the images are loaded
#        into the disk's /var/lib/docker at build time by a throwaway dockerd on this host
#        (seconds here; `docker load` of the hub image took ~15 min inside a TCG VM): the
#        provisioners' `load` image steps then find them and change nothing. Host and box run
#        the same Debian docker.io, so the overlay2 layout is the box's own. With
#        CABLAB_BAKED_IMAGES_WAIT=SECONDS the tarballs may still be in the making when the build
#        starts (the harness builds the images beside the box): everything that does not need
#        them (debootstrap, packages, disk, the GRUB boot) runs first, then the build waits up to
#        SECONDS for each tarball to appear (they are renamed into place once complete).
#
# The box is cached in $CABLAB_BOX_CACHE (default ~/.cache/cablab/boxes), keyed by a hash of
# this script, the flavour, the package lists, the baked images' names (content-keyed by the
# harness) and the Vagrant public key; an existing file is
# not built again (FORCE=1 rebuilds). It is then added to vagrant as cablab/bookworm-FLAVOUR
# (provider libvirt) unless vagrant already has that very build (marker file beside the box).
#
# Needs root and the host packages of lab/host-setup.sh (libvirtd running only for `box add`
# to clear a stale libvirt volume of an older build).
# Logs of the last build (debootstrap, apt, GRUB boot serial console): $CABLAB_BOX_CACHE/logs-FLAVOUR.
# Env: DEBIAN_MIRROR (default http://deb.debian.org/debian), DEBIAN_SECURITY_MIRROR
#      (default http://deb.debian.org/debian-security), CABLAB_BOX_CACHE, FORCE=1 (rebuild),
#      KEEP_WORK=1 (keep the work dir in /var/tmp), KEEP_WORK_ON_ERROR=1.
set -euo pipefail

FLAVOUR=${1:-baked}
case $FLAVOUR in
  baked | bare) ;;
  *) echo "usage: $0 [baked|bare]" >&2; exit 2 ;;
esac

SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
CACHE_ROOT=${CABLAB_CACHE:-$HOME/.cache/cablab}
BOX_CACHE=${CABLAB_BOX_CACHE:-$CACHE_ROOT/boxes}
DEB_CACHE=$CACHE_ROOT/debs # .deb files, shared by debootstrap and the chroot's apt
BOX_NAME=cablab/bookworm-$FLAVOUR
DISK_GB=20
FS_LABEL=cablab-root
PART_OFFSET=1048576 # the one MBR partition starts at sector 2048

BASE_PACKAGES=(
  systemd-sysv udev kmod iproute2 ifupdown isc-dhcp-client openssh-server sudo
  linux-image-cloud-amd64 grub-pc initramfs-tools ca-certificates python3
)
# What the provisioners apt-get install. The lab harness passes the exact list from
# cablab_cluster.plan.PACKAGES (CABLAB_BAKED_PACKAGES); this default is for running by hand.
read -r -a BAKED_PACKAGES <<<"${CABLAB_BAKED_PACKAGES:-docker.io apparmor nfs-kernel-server nfs-common lvm2 xfsprogs thin-provisioning-tools}"
read -r -a BAKED_IMAGES <<<"${CABLAB_BAKED_IMAGES:-}"
read -r -a BOX_DISABLED_UNITS <<<"${CABLAB_BOX_DISABLED_UNITS:-firewalld.service}"
# The guest kernel's CPU side-channel mitigations (CABLAB_BOX_MITIGATIONS: off | auto). Where
# the lab's VMs run under QEMU/TCG (no usable KVM: the Vagrantfile's own test), the emulated CPU
# executes nothing speculatively, so the mitigations protect nothing there, and one of them costs
# a great deal: with Meltdown's page-table isolation (PTI; the Nehalem model has no PCID) every
# system call and interrupt reloads CR3, and TCG then flushes its whole software TLB. Default:
# off under TCG, the kernel's own choice (auto) where KVM runs the VMs on the real CPU.
kvm_usable() { [[ -e /dev/kvm ]] && grep -qE '\b(vmx|svm)\b' /proc/cpuinfo; }
if kvm_usable; then MITIGATIONS=${CABLAB_BOX_MITIGATIONS:-auto}; else MITIGATIONS=${CABLAB_BOX_MITIGATIONS:-off}; fi
case $MITIGATIONS in
  off) KERNEL_EXTRA=" mitigations=off" ;;
  auto) KERNEL_EXTRA="" ;;
  *) echo "[box] ERROR: CABLAB_BOX_MITIGATIONS=$MITIGATIONS: use off or auto" >&2; exit 2 ;;
esac
packages=("${BASE_PACKAGES[@]}")
[[ $FLAVOUR == baked ]] && packages+=("${BAKED_PACKAGES[@]}")
[[ $FLAVOUR == baked ]] || BAKED_IMAGES=()
IMAGES_WAIT=${CABLAB_BAKED_IMAGES_WAIT:-0}
[[ $IMAGES_WAIT =~ ^[0-9]+$ ]] || { echo "[box] ERROR: CABLAB_BAKED_IMAGES_WAIT=$IMAGES_WAIT: a number of seconds" >&2; exit 2; }
if [[ $IMAGES_WAIT == 0 ]]; then
  for tarball in "${BAKED_IMAGES[@]}"; do
    [[ -s $tarball ]] || { echo "[box] ERROR: CABLAB_BAKED_IMAGES: $tarball is missing or empty (build the images first: python -m lab VARIANT --from images)" >&2; exit 2; }
  done
fi

log() { printf '[box %s %s] %s\n' "$FLAVOUR" "$(date +%H:%M:%S)" "$*"; }
die() { printf '[box %s] ERROR: %s\n' "$FLAVOUR" "$*" >&2; exit 1; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
human() { numfmt --to=iec --suffix=B "$1"; }

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, losetup, mount)"
tools=(debootstrap sfdisk losetup mkfs.ext4 qemu-img qemu-system-x86_64 vagrant tar flock)
[[ ${#BAKED_IMAGES[@]} -gt 0 ]] && tools+=(dockerd docker unshare)
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null || die "$tool missing: run lab/host-setup.sh first"
done

# Vagrant's insecure public key, from the installed vagrant package.
vagrant_pub=$(dpkg -L vagrant 2>/dev/null | sed -n '\|/keys/vagrant\.pub$|p')
vagrant_pub=${vagrant_pub%%$'\n'*}
[[ -n $vagrant_pub && -s $vagrant_pub ]] || die "keys/vagrant.pub not found in the vagrant package (dpkg -L vagrant)"

self=$(readlink -f "${BASH_SOURCE[0]}")
key=$({
  cat "$self"
  echo "flavour=$FLAVOUR suite=$SUITE"
  echo "packages=${packages[*]}"
  echo "disabled=${BOX_DISABLED_UNITS[*]}"
  echo "mitigations=$MITIGATIONS"
  for tarball in "${BAKED_IMAGES[@]}"; do echo "image=$(basename "$tarball")"; done
  cat "$vagrant_pub"
} | sha256sum | cut -c1-16)
BOX_FILE=$BOX_CACHE/cablab-bookworm-$FLAVOUR-$key.box
MARKER=$BOX_CACHE/cablab-bookworm-$FLAVOUR.vagrant-added # holds the key vagrant has

mkdir -p "$BOX_CACHE" "$DEB_CACHE/partial"
exec 9>"$BOX_CACHE/.lock-$FLAVOUR"
flock -n 9 || { log "another build of $FLAVOUR is running: waiting"; flock 9; }

T_START=$(now)
PHASES=()
phase_done() { # NAME T0 DETAIL: one progress line per phase, with its wall time
  local dt
  dt=$(secs "$2" "$(now)")
  PHASES+=("$(printf '%-12s %7ss' "$1" "$dt")")
  log "$(printf '%-12s %7ss  %s' "$1" "$dt" "$3")"
}

# ----------------------------------------------------------------------------------------
build_box() {
  WORK=$(mktemp -d /var/tmp/cablab-box-"$FLAVOUR".XXXXXX)
  ROOT=$WORK/rootfs
  MNT=$WORK/mnt
  RAW=$WORK/disk.raw
  LOOP=
  QEMU_PID=
  trap cleanup EXIT
  trap 'exit 143' TERM INT # the harness stops a build whose images failed: cleanup still runs
  log "building $BOX_NAME (key $key) in $WORK; phases: debootstrap configure$([[ $FLAVOUR == baked ]] && echo ' bake') disk grub-boot$([[ ${#BAKED_IMAGES[@]} -gt 0 ]] && echo ' wait-images images') package"

  # --- debootstrap -----------------------------------------------------------------------
  local t0
  t0=$(now)
  # The kernel comes later, from the apt step that sees bookworm-security too: installing the
  # point release's kernel here would leave two kernels (and two initramfs runs) in the box.
  local include=()
  local p
  for p in "${BASE_PACKAGES[@]}"; do [[ $p == linux-image-* ]] || include+=("$p"); done
  debootstrap --variant=minbase --cache-dir="$DEB_CACHE" \
    --include="$(IFS=,; echo "${include[*]}")" \
    "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
    { tail -n 30 "$WORK/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
  phase_done debootstrap "$t0" "minbase + ${#include[@]} packages, $(du -sh --one-file-system "$ROOT" | cut -f1)"

  # --- configure -------------------------------------------------------------------------
  t0=$(now)
  configure_rootfs
  phase_done configure "$t0" "security updates, kernel $(kernel_version), vagrant user, ssh, eth0 DHCP, serial console ($(du -sh --one-file-system "$ROOT" | cut -f1))"

  # --- bake (baked only) -----------------------------------------------------------------
  if [[ $FLAVOUR == baked ]]; then
    t0=$(now)
    chroot_mounts
    in_root apt-get install -y -q --no-install-recommends "${BAKED_PACKAGES[@]}" >"$WORK/bake.log" 2>&1 ||
      { tail -n 30 "$WORK/bake.log" >&2; die "installing the baked packages failed"; }
    # Services a distribution decides on are left off in the box; the harness turns on what the
    # variant's distribution runs by default (firewalld on EL: lab/harness.py DISTRIBUTION_SERVICES).
    for unit in "${BOX_DISABLED_UNITS[@]}"; do
      if [[ -e $ROOT/lib/systemd/system/$unit ]]; then in_root systemctl disable "$unit" >/dev/null 2>&1; fi
    done
    chroot_umounts
    phase_done bake "$t0" "${BAKED_PACKAGES[*]} ($(du -sh --one-file-system "$ROOT" | cut -f1))"
  fi
  scrub_rootfs

  # --- disk ------------------------------------------------------------------------------
  t0=$(now)
  truncate -s "${DISK_GB}G" "$RAW"
  printf 'label: dos\nstart=%s, type=83, bootable\n' $((PART_OFFSET / 512)) | sfdisk -q "$RAW"
  LOOP=$(losetup --find --show --offset "$PART_OFFSET" "$RAW")
  # Inode tables and journal written now (natively), not by ext4lazyinit in every VM under TCG.
  mkfs.ext4 -q -L "$FS_LABEL" -E lazy_itable_init=0,lazy_journal_init=0 "$LOOP"
  mkdir -p "$MNT"
  mount "$LOOP" "$MNT"
  tar -C "$ROOT" --xattrs --xattrs-include='*' --acls --numeric-owner -cf - . |
    tar -C "$MNT" --xattrs --xattrs-include='*' --acls --numeric-owner -xpf -
  phase_done disk "$t0" "${DISK_GB}G raw, MBR, ext4 LABEL=$FS_LABEL, $(du -h "$RAW" | cut -f1) allocated"
  umount "$MNT"
  losetup -d "$LOOP"
  LOOP=

  # --- grub boot (before the images: it does not need them, which may still be building) --
  t0=$(now)
  grub_boot
  finalize_disk # leaves the disk mounted on $MNT
  phase_done grub-boot "$t0" "grub-install + update-grub in one TCG boot, first-boot state reset"

  # --- images (baked with CABLAB_BAKED_IMAGES) -------------------------------------------
  if [[ ${#BAKED_IMAGES[@]} -gt 0 ]]; then
    t0=$(now)
    wait_for_images
    phase_done wait-images "$t0" "${#BAKED_IMAGES[@]} tarball(s) ready"
    t0=$(now)
    bake_images
    phase_done images "$t0" "$BAKED_SUMMARY in /var/lib/docker ($(du -sh --one-file-system "$MNT/var/lib/docker" | cut -f1))"
  fi
  fstrim "$MNT" >/dev/null 2>&1 || true # punch freed blocks out of the raw file
  umount "$MNT"
  losetup -d "$LOOP"
  LOOP=

  # --- package ---------------------------------------------------------------------------
  t0=$(now)
  package_box
  phase_done package "$t0" "$(basename "$BOX_FILE") $(human "$(stat -c %s "$BOX_FILE")")"
}

cleanup() {
  local rc=$?
  set +e
  [[ -n ${QEMU_PID:-} ]] && kill "$QEMU_PID" 2>/dev/null
  stop_bake_dockerd
  chroot_umounts 2>/dev/null
  mountpoint -q "$MNT" 2>/dev/null && umount "$MNT"
  [[ -n ${LOOP:-} ]] && losetup -d "$LOOP"
  # Keep the logs of the last build (debootstrap, apt, serial console of the GRUB boot).
  rm -rf "$BOX_CACHE/logs-$FLAVOUR"
  mkdir -p "$BOX_CACHE/logs-$FLAVOUR" && cp -f "$WORK"/*.log "$BOX_CACHE/logs-$FLAVOUR/" 2>/dev/null
  if [[ ${KEEP_WORK:-0} == 1 || $rc -ne 0 && -n ${KEEP_WORK_ON_ERROR:-} ]]; then
    log "work dir kept: $WORK"
  else
    rm -rf --one-file-system "$WORK"
  fi
  return $rc
}

# --- images: a throwaway dockerd whose data root is the new disk's /var/lib/docker ---------
BAKE_DOCKERD_PID=
BAKED_SUMMARY=
bake_docker() { docker -H "unix://$WORK/bake-docker.sock" "$@"; }
# Each tarball, or up to CABLAB_BAKED_IMAGES_WAIT s for the ones being built beside the box.
wait_for_images() {
  local tarball missing deadline=$((SECONDS + IMAGES_WAIT))
  while :; do
    missing=()
    for tarball in "${BAKED_IMAGES[@]}"; do [[ -s $tarball ]] || missing+=("$(basename "$tarball")"); done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    [[ $SECONDS -lt $deadline ]] || die "the images ${missing[*]} did not appear in ${IMAGES_WAIT} s (CABLAB_BAKED_IMAGES_WAIT)"
    [[ -n ${waiting_logged:-} ]] || { log "waiting for the images being built: ${missing[*]}"; waiting_logged=1; }
    sleep 1
  done
}
bake_images() {
  local root=$MNT/var/lib/docker tarball i entry
  mkdir -p "$root" "$WORK/bake-exec"
  echo '{}' >"$WORK/bake-daemon.json" # not the host's /etc/docker/daemon.json
  # It only loads images: no networking, and in a network namespace of its own (a dockerd
  # with --bridge none deletes the host's docker0, which the host's dockerd builds need).
  # Its containerd lives under its exec root.
  unshare --net dockerd --config-file "$WORK/bake-daemon.json" --data-root "$root" --exec-root "$WORK/bake-exec" \
    --pidfile "$WORK/bake-dockerd.pid" -H "unix://$WORK/bake-docker.sock" --storage-driver overlay2 \
    --bridge none --iptables=false --ip-masq=false >"$WORK/bake-dockerd.log" 2>&1 &
  BAKE_DOCKERD_PID=$!
  for i in $(seq 120); do
    bake_docker version >/dev/null 2>&1 && break
    kill -0 "$BAKE_DOCKERD_PID" 2>/dev/null || { tail -n 20 "$WORK/bake-dockerd.log" >&2; die "the image-baking dockerd exited"; }
    [[ $i == 120 ]] && { tail -n 20 "$WORK/bake-dockerd.log" >&2; die "the image-baking dockerd did not answer in 60 s"; }
    sleep 0.5
  done
  for tarball in "${BAKED_IMAGES[@]}"; do
    bake_docker load -q -i "$tarball" >>"$WORK/bake-images.log" 2>&1 ||
      { tail -n 20 "$WORK/bake-images.log" >&2; die "docker load $tarball failed"; }
  done
  BAKED_SUMMARY=$(bake_docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | paste -sd, -)
  stop_bake_dockerd
  # Keep the images only: the box's own dockerd makes its network and runtime state on first boot.
  for entry in "$root"/*; do
    case ${entry##*/} in image | overlay2) ;; *) rm -rf --one-file-system "$entry" ;; esac
  done
}
stop_bake_dockerd() {
  [[ -n ${BAKE_DOCKERD_PID:-} ]] || return 0
  kill "$BAKE_DOCKERD_PID" 2>/dev/null || true
  for _ in $(seq 60); do kill -0 "$BAKE_DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$BAKE_DOCKERD_PID" 2>/dev/null || true # still there after 30 s
  wait "$BAKE_DOCKERD_PID" 2>/dev/null || true     # its exit status after SIGTERM is not ours
  BAKE_DOCKERD_PID=
  return 0
}

# The chroot gets /proc and /dev/pts only: not the host's /dev, whose /dev/vda is the host's
# own disk (grub-pc's maintainer scripts must never see it). debootstrap made the basic nodes.
CHROOT_MOUNTS=(proc dev/pts var/cache/apt/archives)
chroot_mounts() {
  mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
  mountpoint -q "$ROOT/dev/pts" || mount -t devpts -o newinstance,ptmxmode=0666 devpts "$ROOT/dev/pts"
  mountpoint -q "$ROOT/var/cache/apt/archives" || mount --bind "$DEB_CACHE" "$ROOT/var/cache/apt/archives"
}
chroot_umounts() {
  local m
  for m in "${CHROOT_MOUNTS[@]}"; do
    mountpoint -q "$ROOT/$m" && umount "$ROOT/$m"
  done
  return 0
}
in_root() {
  LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true \
    chroot "$ROOT" "$@"
}

configure_rootfs() {
  # Daemons must not start inside the chroot.
  printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
  chmod 755 "$ROOT/usr/sbin/policy-rc.d"

  cat >"$ROOT/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF
  echo 'Acquire::Languages "none";' >"$ROOT/etc/apt/apt.conf.d/90cablab-no-languages"
  # Keep GRUB away from any device while in the chroot; the grub boot sets /dev/vda.
  echo 'grub-pc grub-pc/install_devices_empty boolean true' | in_root debconf-set-selections

  chroot_mounts
  {
    in_root apt-get update -q &&
      in_root apt-get dist-upgrade -y -q --no-install-recommends &&
      in_root apt-get install -y -q --no-install-recommends "${BASE_PACKAGES[@]}"
  } >"$WORK/configure-apt.log" 2>&1 ||
    { tail -n 30 "$WORK/configure-apt.log" >&2; die "apt in the chroot failed"; }
  chroot_umounts

  echo cablab >"$ROOT/etc/hostname"
  printf '127.0.0.1\tlocalhost\n127.0.1.1\tcablab\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$ROOT/etc/hosts"
  printf 'LABEL=%s\t/\text4\tdefaults,noatime,errors=remount-ro\t0\t1\n' "$FS_LABEL" >"$ROOT/etc/fstab"
  echo 'LANG=C.UTF-8' | tee "$ROOT/etc/default/locale" >"$ROOT/etc/locale.conf"
  ln -sf /usr/share/zoneinfo/Etc/UTC "$ROOT/etc/localtime"
  echo Etc/UTC >"$ROOT/etc/timezone"

  # eth0 (net.ifnames=0) by DHCP; vagrant's debian guest adds the private networks here.
  cat >"$ROOT/etc/network/interfaces" <<'EOF'
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback

auto eth0
iface eth0 inet dhcp
EOF

  # Vagrant user: insecure public key (config.ssh.insert_key = false keeps it), sudo without
  # password. Password "vagrant" for the serial console only (SSH takes keys only).
  in_root useradd --create-home --shell /bin/bash --user-group --groups sudo vagrant
  echo 'vagrant:vagrant' | in_root chpasswd
  install -d -m 700 "$ROOT/home/vagrant/.ssh"
  install -m 600 "$vagrant_pub" "$ROOT/home/vagrant/.ssh/authorized_keys"
  in_root chown -R vagrant:vagrant /home/vagrant/.ssh
  printf 'vagrant ALL=(ALL) NOPASSWD: ALL\nDefaults:vagrant !requiretty\n' >"$ROOT/etc/sudoers.d/vagrant"
  chmod 440 "$ROOT/etc/sudoers.d/vagrant"

  # SSH: one ed25519 host key, made on first boot (RSA keygen costs ~30 s under TCG; keys
  # baked into the box would be shared by every VM).
  cat >"$ROOT/etc/ssh/sshd_config.d/10-cablab.conf" <<'EOF'
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
UseDNS no
EOF
  cat >"$ROOT/etc/systemd/system/cablab-ssh-hostkey.service" <<'EOF'
[Unit]
Description=Generate the SSH ed25519 host key (first boot)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N "" -C "" -f /etc/ssh/ssh_host_ed25519_key

[Install]
WantedBy=multi-user.target
EOF
  in_root systemctl enable cablab-ssh-hostkey.service >/dev/null 2>&1

  # No background apt in the VMs (it holds the dpkg lock and eats TCG CPU); no interactive
  # first-boot questions on the console; nothing at boot that a lab VM does not need (measured
  # under TCG: e2scrub_reap 25 s, getty-static 13 s, which starts gettys on tty2-6 when there
  # is no dbus).
  local unit
  for unit in apt-daily.timer apt-daily-upgrade.timer apt-daily.service apt-daily-upgrade.service \
              systemd-firstboot.service e2scrub_reap.service e2scrub_all.timer getty-static.service; do
    ln -sf /dev/null "$ROOT/etc/systemd/system/$unit"
  done

  # An empty machine-id makes systemd treat a boot as the first and apply presets (enable-only):
  # systemd's 90-systemd.preset would then enable systemd-networkd etc. beside ifupdown. Opt out
  # of those units only: deb-systemd-helper applies presets too, and packages (docker.io,
  # nfs-kernel-server) must stay enabled as Debian ships them ("disable *" would disable them).
  mkdir -p "$ROOT/etc/systemd/system-preset"
  cat >"$ROOT/etc/systemd/system-preset/00-cablab.preset" <<'EOF'
disable systemd-networkd.service
disable systemd-networkd.socket
disable systemd-network-generator.service
disable systemd-resolved.service
disable systemd-timesyncd.service
disable systemd-homed.service
disable systemd-userdbd.socket
disable systemd-boot-update.service
EOF

  # GRUB: no menu delay, serial + VGA console, classic interface names.
  local grub=$ROOT/etc/default/grub
  sed -i -E \
    -e 's/^#?GRUB_TIMEOUT=.*/GRUB_TIMEOUT=0/' \
    -e "s/^#?GRUB_CMDLINE_LINUX=.*/GRUB_CMDLINE_LINUX=\"console=tty0 console=ttyS0,115200n8 net.ifnames=0 biosdevname=0$KERNEL_EXTRA\"/" \
    -e 's/^#?GRUB_TERMINAL=.*/GRUB_TERMINAL="console serial"/' \
    "$grub"
  grep -q '^GRUB_TERMINAL=' "$grub" || echo 'GRUB_TERMINAL="console serial"' >>"$grub"
  cat >>"$grub" <<'EOF'
GRUB_SERIAL_COMMAND="serial --speed=115200 --unit=0 --word=8 --parity=no --stop=1"
GRUB_DISABLE_OS_PROBER=true
GRUB_DISABLE_RECOVERY=true
EOF

  # Build-time only, removed by finalize_disk: booted once with systemd.unit=cablab-grub.target,
  # installs GRUB to the VM's own /dev/vda, then powers off. No default dependencies: systemd
  # starts this unit alone (no udev coldplug, journald, lvm...: ~50 s less under TCG).
  cat >"$ROOT/usr/local/sbin/cablab-grub-firstboot" <<'EOF'
#!/bin/sh
status=/var/lib/cablab-grub.status
say() { echo "cablab-grub [$(cut -d' ' -f1 /proc/uptime)s] $*" >/dev/console; }
echo failed >"$status"
trap 'sync; say "power off"; systemctl --no-block poweroff' EXIT
set -e
say "start"
echo 'grub-pc grub-pc/install_devices multiselect /dev/vda' | debconf-set-selections
echo 'grub-pc grub-pc/install_devices_empty boolean false' | debconf-set-selections
grub-install --target=i386-pc /dev/vda >/dev/console 2>&1
say "grub-install done"
update-grub >/dev/console 2>&1
echo ok >"$status"
say "CABLAB-GRUB-OK"
EOF
  chmod 755 "$ROOT/usr/local/sbin/cablab-grub-firstboot"
  cat >"$ROOT/etc/systemd/system/cablab-grub.service" <<'EOF'
[Unit]
Description=cablab box build: install GRUB on /dev/vda, then power off
DefaultDependencies=no

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/cablab-grub-firstboot
StandardOutput=console
StandardError=console
EOF
  cat >"$ROOT/etc/systemd/system/cablab-grub.target" <<'EOF'
[Unit]
Description=cablab box build: GRUB installation boot
DefaultDependencies=no
Requires=cablab-grub.service
After=cablab-grub.service
AllowIsolate=yes
EOF
}

# Leave no build state, cache or identity in the image.
scrub_rootfs() {
  chroot_umounts
  rm -f "$ROOT/usr/sbin/policy-rc.d"
  rm -f "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/cache/apt/*.bin
  rm -f "$ROOT"/etc/ssh/ssh_host_*
  rm -f "$ROOT/etc/resolv.conf" # dhclient writes it
  : >"$ROOT/etc/machine-id"   # empty: each VM makes its own on first boot
  rm -f "$ROOT/var/lib/dbus/machine-id"
  rm -rf "$ROOT"/tmp/* "$ROOT"/var/tmp/*
}

kernel_version() {
  find "$ROOT/boot" -maxdepth 1 -name 'vmlinuz-*' -printf '%f\n' | sed 's/^vmlinuz-//' | sort -V | tail -n 1
}

grub_boot() {
  local kver kernel initrd
  kver=$(kernel_version)
  kernel=$ROOT/boot/vmlinuz-$kver
  initrd=$ROOT/boot/initrd.img-$kver
  [[ -r $kernel && -r $initrd ]] || die "kernel or initrd missing in $ROOT/boot"
  timeout 900 qemu-system-x86_64 \
    -accel tcg,thread=multi -machine pc -cpu Nehalem -smp 2 -m 1024 \
    -nodefaults -display none -no-reboot \
    -serial "file:$WORK/grub-boot.log" \
    -drive "file=$RAW,format=raw,if=virtio,cache=unsafe" \
    -kernel "$kernel" -initrd "$initrd" \
    -append "root=LABEL=$FS_LABEL rw console=ttyS0,115200n8 net.ifnames=0 quiet systemd.unit=cablab-grub.target" &
  QEMU_PID=$!
  wait "$QEMU_PID" || { QEMU_PID=; tail -n 40 "$WORK/grub-boot.log" >&2; die "the GRUB boot failed or timed out"; }
  QEMU_PID=
}

# After the GRUB boot: check it worked, remove the build-only units, reset first-boot state
# (the disk stays mounted on $MNT for the images).
finalize_disk() {
  LOOP=$(losetup --find --show --offset "$PART_OFFSET" "$RAW")
  mount "$LOOP" "$MNT"
  if [[ $(cat "$MNT/var/lib/cablab-grub.status" 2>/dev/null) != ok || ! -s $MNT/boot/grub/grub.cfg ]] ||
     ! head -c 512 "$RAW" | grep -aq GRUB; then
    tail -n 40 "$WORK/grub-boot.log" >&2
    die "GRUB was not installed (serial log above)"
  fi
  # Units the VMs rely on are enabled (and networkd, which would fight ifupdown, is not).
  local wants=$MNT/etc/systemd/system/multi-user.target.wants u
  local expect=(ssh.service cablab-ssh-hostkey.service networking.service)
  [[ $FLAVOUR == baked ]] && expect+=(docker.service nfs-server.service)
  for u in "${expect[@]}"; do
    [[ -L $wants/$u ]] || die "$u is not enabled in the image"
  done
  [[ ! -e $wants/systemd-networkd.service ]] || die "systemd-networkd is enabled in the image"
  rm -f "$MNT/var/lib/cablab-grub.status" "$MNT/usr/local/sbin/cablab-grub-firstboot" \
    "$MNT/etc/systemd/system/cablab-grub.service" "$MNT/etc/systemd/system/cablab-grub.target"
  : >"$MNT/etc/machine-id"
  rm -f "$MNT"/etc/ssh/ssh_host_* "$MNT/var/lib/systemd/random-seed" "$MNT/var/lib/systemd/credential.secret"
  rm -rf "$MNT"/var/log/journal/* "$MNT"/var/lib/dhcp/* "$MNT"/tmp/* "$MNT"/var/tmp/*
}

package_box() {
  local pkg=$WORK/pkg
  mkdir -p "$pkg"
  # Compressed qcow2 (zstd), so the box is a plain tar that vagrant unpacks without gunzip and
  # vagrant-libvirt uploads a small volume.
  qemu-img convert -m 4 -c -O qcow2 -o compression_type=zstd "$RAW" "$pkg/box.img"
  printf '{"provider":"libvirt","format":"qcow2","virtual_size":%s}\n' "$DISK_GB" >"$pkg/metadata.json"
  cat >"$pkg/Vagrantfile" <<'EOF'
# cablab/bookworm box (lab/boxes/build.sh): Debian 12, user vagrant with the insecure key.
Vagrant.configure("2") do |config|
  config.vm.guest = :debian
  config.ssh.insert_key = false
end
EOF
  tar -C "$pkg" -cf "$WORK/box.tmp" metadata.json Vagrantfile box.img
  mv "$WORK/box.tmp" "$BOX_FILE"
  # Older builds of this flavour are superseded.
  find "$BOX_CACHE" -maxdepth 1 -name "cablab-bookworm-$FLAVOUR-*.box" ! -name "$(basename "$BOX_FILE")" -delete
}

# ----------------------------------------------------------------------------------------
if [[ -s $BOX_FILE && ${FORCE:-0} != 1 ]]; then
  log "cached: $BOX_FILE ($(human "$(stat -c %s "$BOX_FILE")")), build skipped"
else
  build_box
  trap - EXIT
  cleanup
fi

# --- vagrant box add, unless vagrant has this very build ----------------------------------
t0=$(now)
boxes=$(vagrant box list 2>/dev/null || true)
if [[ $(cat "$MARKER" 2>/dev/null) == "$key" ]] && grep -q "^$BOX_NAME *(libvirt," <<<"$boxes"; then
  log "vagrant already has $BOX_NAME (libvirt) of build $key: box add skipped"
else
  # vagrant-libvirt uploads each box build once into the pool as a base volume named after the
  # box (and, for an unversioned box, its timestamp) and leaves it there: drop older builds'.
  # One still backing a VM's disk stays (its VMs would lose their root disk).
  if virsh -c qemu:///system pool-info default >/dev/null 2>&1; then
    vol_list=$(virsh -c qemu:///system vol-list default 2>/dev/null | awk 'NR > 2 && NF >= 2 { print $1, $2 }')
    backing=$(while read -r _ path; do
      [[ -n $path ]] && qemu-img info -U "$path" 2>/dev/null | sed -n 's/^backing file: \([^ ]*\).*/\1/p'
    done <<<"$vol_list")
    prefix="${BOX_NAME//\//-VAGRANTSLASH-}_vagrant_box_image_"
    while read -r v path; do
      [[ $v == "$prefix"* ]] || continue
      if grep -qxF "$path" <<<"$backing"; then
        log "kept libvirt volume $v of an older build: VMs still use it (after vagrant destroy: virsh vol-delete --pool default $v)"
      else
        virsh -c qemu:///system vol-delete --pool default "$v" >/dev/null
        log "removed libvirt volume $v of an older build"
      fi
    done <<<"$vol_list"
  fi
  vagrant box add --force --name "$BOX_NAME" --provider libvirt "$BOX_FILE" >"$BOX_CACHE/box-add-$FLAVOUR.log" 2>&1 ||
    { tail -n 20 "$BOX_CACHE/box-add-$FLAVOUR.log" >&2; die "vagrant box add failed"; }
  echo "$key" >"$MARKER"
  phase_done box-add "$t0" "vagrant box $BOX_NAME (libvirt)"
fi

log "total $(secs "$T_START" "$(now)")s; box $BOX_FILE"
for p in "${PHASES[@]}"; do log "  $p"; done
