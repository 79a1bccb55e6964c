#!/bin/sh
# Write .env, or refresh its UID and GID, so the containers write ./runs and ./data as the
# person who typed `make` (under sudo, the invoking user, not root); every other line is kept.
set -eu
uid=${SUDO_UID:-$(id -u)}
gid=${SUDO_GID:-$(id -g)}
touch .env
old=$(grep -E '^(UID|GID)=' .env | tr '\n' ' ' || true)
{ echo "UID=$uid"; echo "GID=$gid"; grep -vE '^(UID|GID)=' .env || true; } >.env.new
# JupyterLab's token (docker compose up jupyter): random, written once, kept after.
if ! grep -qE '^JUPYTER_TOKEN=.+' .env.new; then
    grep -v '^JUPYTER_TOKEN=' .env.new >.env.tmp || true
    echo "JUPYTER_TOKEN=$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')" >>.env.tmp
    mv .env.tmp .env.new
    echo "wrote a JupyterLab token into .env (JUPYTER_TOKEN)"
fi
chmod 600 .env.new
mv .env.new .env
[ -n "${SUDO_UID:-}" ] && chown "$uid:$gid" .env
[ "$old" = "UID=$uid GID=$gid " ] || echo "wrote .env: UID=$uid GID=$gid (see .env.example for the other settings)"
if [ "$uid" = 0 ] && ! grep -q '^TRAIN_ALLOW_ROOT=1' .env; then
    echo "warning: the containers will run as root (you are root, not under sudo): files in" \
         "./runs and ./data will belong to root. Run make as your own user, or set UID/GID" \
         "in .env; TRAIN_ALLOW_ROOT=1 in .env silences this." >&2
fi
