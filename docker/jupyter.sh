#!/bin/sh
# The jupyter image's command: JupyterLab on /notebooks, with a token always. The token comes
# from .env (make .env writes a random one once); a blank one would switch authentication off,
# so none is refused here, before the server starts.
set -e
if [ -z "${JUPYTER_TOKEN:-}" ]; then
    echo "error: no JUPYTER_TOKEN: run make .env (it writes a random token into .env), or set" \
         "JUPYTER_TOKEN in .env; JupyterLab never runs without one." >&2
    exit 2
fi
root=""
if [ "$(id -u)" = 0 ]; then  # (JupyterLab refuses root unless told: told only when meant)
    if [ "${TRAIN_ALLOW_ROOT:-}" != 1 ]; then
        echo "error: JupyterLab would run as root, writing root-owned notebooks and runs: set" \
             "UID/GID in .env to your user (make .env does), or TRAIN_ALLOW_ROOT=1." >&2
        exit 2
    fi
    root="--allow-root"
fi
echo "JupyterLab: open http://127.0.0.1:8888/lab?token=$JUPYTER_TOKEN (the port compose publishes)"
exec jupyter lab --ip=0.0.0.0 --port=8888 --no-browser --ServerApp.root_dir=/notebooks $root "$@"
