#!/usr/bin/env bash
# Make a Debian bookworm base image with python3 from Debian's packages (debootstrap),
# for machines that cannot pull images: docker build --build-arg BASE=wsqueue-base:bookworm .
set -euo pipefail
name=${1:-wsqueue-base:bookworm}
if docker image inspect "$name" >/dev/null 2>&1; then exit 0; fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" http://deb.debian.org/debian >/dev/null
# This machine's own extra CAs (a TLS-inspecting egress proxy, a company CA), so that pip
# inside the build trusts what pip outside does.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  chroot "$root" update-ca-certificates >/dev/null
fi
tar -C "$root" -c . | docker import - "$name" >/dev/null
echo "$name"
