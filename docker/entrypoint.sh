#!/bin/sh
# The images' entrypoint. Hydra overrides (key=value, -m, --help, ...) go to `python -m train`,
# so `docker compose run --rm train model=cnn` trains; anything else runs as a command
# (`python -m train.evaluate run=...`, `bash`, `pytest`, `tensorboard ...`). `exec` makes the
# command the direct child of the container's init, so it receives `docker stop`'s SIGTERM.
set -e
if [ "$(id -u)" = 0 ] && [ "${TRAIN_ALLOW_ROOT:-}" != 1 ]; then
    echo "warning: this container runs as root: files it writes to /runs and /data will belong" \
         "to root on the host. Set UID/GID in .env to your user (make .env does), or" \
         "TRAIN_ALLOW_ROOT=1 to run as root on purpose." >&2
fi
case "${1:-}" in
    "" | *=* | -* | ~*) exec python -m train "$@" ;;
    *) exec "$@" ;;
esac
