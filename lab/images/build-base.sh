#!/usr/bin/env bash
# Build a minimal Debian bookworm base image for the lab without a container
# registry: debootstrap --variant=minbase from the Debian mirror, slimmed the
# way debian:bookworm-slim is, then `tar | docker import`.
#
# Result: cablab/base:bookworm-<key> and cablab/base:bookworm (same image).
# <key> = hash of this script + the package list + suite, so a changed script
# or package list builds a new image and an unchanged one is a no-op.
#
# The Dockerfiles take it via `--build-arg BASE_IMAGE=cablab/base:bookworm`;
# on a real cluster they use their default, debian:bookworm-slim.
#
# Env: DEBIAN_MIRROR (default: debootstrap's own default mirror),
#      DEBIAN_SECURITY_MIRROR (default: <mirror>-security, i.e. the mirror URL
#      with /debian replaced by /debian-security),
#      BASE_PACKAGES (extra packages, default none: parity with bookworm-slim),
#      BASE_REPO (default cablab/base), FORCE=1 to rebuild.
set -euo pipefail

SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-}
BASE_PACKAGES=${BASE_PACKAGES:-}
REPO=${BASE_REPO:-cablab/base}
DOCKER=${DOCKER:-docker}

self=$(readlink -f "${BASH_SOURCE[0]}")
key=$( { cat "$self"; echo "suite=$SUITE"; echo "packages=$BASE_PACKAGES"; } | sha256sum | cut -c1-12)
tag_key="$REPO:$SUITE-$key"
tag_plain="$REPO:$SUITE"

log() { printf '[build-base %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
now() { date +%s.%N; }
dt() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", b-a}'; }

[ "$(id -u)" = 0 ] || { echo "must run as root (debootstrap)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "debootstrap missing: apt-get install -y debootstrap" >&2; exit 1; }
$DOCKER info >/dev/null 2>&1 || { echo "docker daemon not reachable" >&2; exit 1; }

if [ "${FORCE:-0}" != 1 ] && $DOCKER image inspect "$tag_key" >/dev/null 2>&1; then
  $DOCKER tag "$tag_key" "$tag_plain"
  log "cached: $tag_key (tagged $tag_plain), $($DOCKER image inspect -f '{{.Size}}' "$tag_key") bytes"
  exit 0
fi

t0=$(now)
work=$(mktemp -d /var/tmp/cablab-base.XXXXXX)
trap 'rm -rf --one-file-system "$work"' EXIT
rootfs="$work/rootfs"

# 1. debootstrap (minbase = Essential + apt; what bookworm-slim starts from)
log "debootstrap --variant=minbase $SUITE ${MIRROR:-(default mirror)}"
include=()
[ -n "$BASE_PACKAGES" ] && include=(--include="$(echo "$BASE_PACKAGES" | tr ' ' ',')")
debootstrap --variant=minbase "${include[@]}" "$SUITE" "$rootfs" ${MIRROR:+"$MIRROR"} >"$work/debootstrap.log" 2>&1 \
  || { tail -30 "$work/debootstrap.log" >&2; exit 1; }
# The mirror debootstrap used (its default unless DEBIAN_MIRROR was given).
MIRROR=$(awk '$1 == "deb" {print $2; exit}' "$rootfs/etc/apt/sources.list")
SECURITY_MIRROR=${SECURITY_MIRROR:-${MIRROR%/}-security}
t1=$(now); log "debootstrap: $(dt "$t0" "$t1") s"

# 2. Configure like the official Docker images (debuerreotype "slim" flavour).
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
# Like debian:*-slim: no docs, man pages, info pages or translations in
# packages installed later (copyright files are kept).
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
EOF
echo force-unsafe-io >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-apt-speedup"
cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
echo 'Acquire::GzipIndexes "true";' >"$rootfs/etc/apt/apt.conf.d/docker-gzip-indexes"
echo 'Acquire::Languages "none";' >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"
echo 'Apt::AutoRemove::SuggestsImportant "false";' >"$rootfs/etc/apt/apt.conf.d/docker-autoremove-suggests"
# No daemons may start during `docker build` (same as the official images).
printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"; chmod 755 "$rootfs/usr/sbin/policy-rc.d"

rm -f "$rootfs/etc/apt/sources.list"
cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF

# Bring in bookworm-updates/-security so the base is current.
cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
  sh -c 'apt-get update -qq && apt-get -y -qq -o Dpkg::Use-Pty=0 upgrade && apt-get clean' >"$work/upgrade.log" 2>&1 \
  || { tail -30 "$work/upgrade.log" >&2; exit 1; }

# 3. Slim: remove what the dpkg excludes above would have kept out.
find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
rm -rf "$rootfs"/usr/share/{man,info,groff,linda,lintian/overrides}/* "$rootfs"/usr/share/locale/*
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
       "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/lib/dpkg/*-old "$rootfs"/tmp/* "$rootfs"/var/tmp/*
find "$rootfs/var/log" -type f -delete
: >"$rootfs/etc/resolv.conf"   # docker bind-mounts its own
: >"$rootfs/etc/hostname"
t2=$(now); log "configure + upgrade + slim: $(dt "$t1" "$t2") s (rootfs $(du -sh "$rootfs" | cut -f1))"

# 4. Import. Numeric owners, xattrs (file capabilities) kept.
tar --numeric-owner --xattrs --xattrs-include='*' -C "$rootfs" -c . \
  | $DOCKER import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["bash"]' \
      --message "cablab base: debootstrap minbase $SUITE, key $key" \
      - "$tag_key" >/dev/null
$DOCKER tag "$tag_key" "$tag_plain"
t3=$(now); log "import: $(dt "$t2" "$t3") s"

size=$($DOCKER image inspect -f '{{.Size}}' "$tag_key")
log "built $tag_key (= $tag_plain): $size bytes ($((size / 1000000)) MB), total $(dt "$t0" "$t3") s"
