#!/usr/bin/env bash
# Build the Python base image locally, from Debian packages, and tag it with the name the
# Dockerfiles use (python:3.11-slim-bookworm by default), so a build never pulls it.
#
# For hosts that cannot reach a container registry (air-gapped CI) and for corporate networks
# whose TLS-inspecting proxy needs its CA trusted inside the build: the host's CA bundle is
# trusted in the image. Needs root, debootstrap and a running Docker engine.
#
#   docker/base-image.sh [TAG]          CA_BUNDLE=... DEBIAN_MIRROR=... FORCE=1 to rebuild
set -euo pipefail

tag=${1:-python:3.11-slim-bookworm}
ca_bundle=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if docker image inspect "$tag" >/dev/null 2>&1 && [ -z "${FORCE:-}" ]; then
    echo "base image $tag exists (FORCE=1 rebuilds it)"
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log"; exit 1; }
tar -C "$work/rootfs" -c . | docker import - local/debian:bookworm >/dev/null

mkdir "$work/context"
cp "$ca_bundle" "$work/context/host-ca.crt"
cat >"$work/context/Dockerfile" <<DOCKERFILE
FROM local/debian:bookworm
COPY host-ca.crt /usr/local/share/ca-certificates/host-ca.crt
RUN apt-get update \\
 && apt-get install -y --no-install-recommends python3 python3-pip python3-venv ca-certificates \\
 && update-ca-certificates \\
 && rm -rf /var/lib/apt/lists/* /usr/lib/python3.11/EXTERNALLY-MANAGED \\
 && ln -s /usr/bin/python3 /usr/local/bin/python \\
 && ln -s /usr/bin/pip3 /usr/local/bin/pip
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \\
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \\
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
DOCKERFILE
DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$work/context" >/dev/null
echo "built base image $tag ($(docker image inspect -f '{{.Size}}' "$tag" | numfmt --to=iec))"
