#!/usr/bin/env bash
# Build a local stand-in for python:3.12-slim where Docker Hub cannot be reached: a minimal Debian
# bookworm (debootstrap --variant=minbase) with python3, python3-venv and ca-certificates, imported as
# an image. The host's CA bundle goes in as well, because package downloads inside builds pass a
# TLS-inspecting proxy whose CA only that bundle has.
#
#   scripts/make_base_image.sh [TAG]        default TAG: immcad-python-base:bookworm
#
# Environment: REBUILD=1 rebuilds an existing image; BASE_ROOTFS=DIR imports an existing debootstrap
# tree instead of making one (read-only use); DEBIAN_MIRROR overrides the mirror; HOST_CA_BUNDLE the
# bundle copied in. Then build with: PYTHON_IMAGE=TAG nox -s spike_image
set -euo pipefail

tag="${1:-immcad-python-base:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
ca_bundle="${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

if [[ "${REBUILD:-0}" != 1 ]] && docker image inspect "$tag" >/dev/null 2>&1; then
  echo "base image $tag already exists (REBUILD=1 to rebuild it)"
  exit 0
fi
for tool in docker tar; do
  command -v "$tool" >/dev/null || { echo "error: $tool not found: apt-get install docker.io" >&2; exit 2; }
done
[[ -f "$ca_bundle" ]] || { echo "error: CA bundle $ca_bundle not found (set HOST_CA_BUNDLE)" >&2; exit 2; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

rootfs="${BASE_ROOTFS:-}"
if [[ -z "$rootfs" ]]; then
  command -v debootstrap >/dev/null || { echo "error: debootstrap not found: apt-get install debootstrap" >&2; exit 2; }
  rootfs="$work/rootfs"
  echo "debootstrap bookworm (minbase + python3, python3-venv, ca-certificates) from $mirror"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 20 "$work/debootstrap.log" >&2; echo "error: debootstrap failed" >&2; exit 1; }
fi
[[ -x "$rootfs/usr/bin/python3" ]] || { echo "error: $rootfs has no usr/bin/python3" >&2; exit 2; }

# The CA bundle is added from a side directory so that a BASE_ROOTFS tree is never modified. It also
# lands under a second name that update-ca-certificates (run by a later apt-get install) never rewrites.
mkdir -p "$work/extra/etc/ssl/certs"
cp "$ca_bundle" "$work/extra/etc/ssl/certs/ca-certificates.crt"
cp "$ca_bundle" "$work/extra/etc/ssl/certs/host-ca-bundle.crt"

# Package caches, apt lists, docs and locales are ~140 MB that no image needs.
echo "importing $rootfs as $tag"
tar --numeric-owner \
  --exclude='./var/cache/apt/archives/*.deb' --exclude='./var/lib/apt/lists/*' \
  --exclude='./usr/share/doc/*' --exclude='./usr/share/man/*' --exclude='./usr/share/locale/*' \
  --exclude='./usr/share/info/*' --exclude='./etc/ssl/certs/ca-certificates.crt' \
  --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' --exclude='./tmp/*' \
  -C "$rootfs" -c . \
  -C "$work/extra" ./etc/ssl/certs/ca-certificates.crt ./etc/ssl/certs/host-ca-bundle.crt \
  | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/host-ca-bundle.crt' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/host-ca-bundle.crt' \
    --change 'ENV REQUESTS_CA_BUNDLE=/etc/ssl/certs/host-ca-bundle.crt' \
    --change 'LABEL org.opencontainers.image.title=immcad-python-base org.opencontainers.image.base.name=debian:bookworm-minbase' \
    --change 'CMD ["python3"]' \
    - "$tag" >/dev/null
docker image inspect "$tag" --format '{{.Id}} {{.Size}}' | awk -v t="$tag" '{printf "built %s (%s, %.1f MiB)\n", t, $1, $2/1048576}'
