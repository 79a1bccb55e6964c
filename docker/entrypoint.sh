#!/bin/sh
# The images' entrypoint. Hydra overrides (key=value, -m, --help, ...) go to `python -m train`,
# so `docker compose run --rm train model=cnn` trains; anything else runs as a command
# (`python -m train.evaluate run=...`, `bash`, `pytest`, `tensorboard ...`). `exec` makes the
# command the direct child of the container's init, so it receives `docker stop`'s SIGTERM.
set -e
case "${1:-}" in
    "" | *=* | -* | ~*) exec python -m train "$@" ;;
    *) exec "$@" ;;
esac
