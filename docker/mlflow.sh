#!/bin/sh
# The MLflow image's entrypoint: MLflow's UI over the store training writes in the runs volume
# (logger=[tensorboard,mlflow] with no tracking_uri: /runs/mlflow.db, artifacts in
# /runs/mlartifacts), and one line with the address a person can open: MLflow's own names the
# one it binds inside the container (0.0.0.0:5000), which no browser opens. Arguments given
# (docker compose run mlflow --workers 1) go to `mlflow server`.
set -eu
url="${MLFLOW_URL:-http://127.0.0.1:5000/}"
case "$url" in *//0.0.0.0:*) url="$(echo "$url" | sed 's/0.0.0.0/127.0.0.1/') (and this machine's address on your network)" ;; esac
echo "MLflow /runs/mlflow.db: open $url  (Ctrl-C stops it)"
# (uvicorn's own lines at warning: its INFO names the inside address and logs every request,
# the healthcheck's every 5 s among them)
exec mlflow server --backend-store-uri sqlite:////runs/mlflow.db \
    --default-artifact-root /runs/mlartifacts --host 0.0.0.0 --port 5000 --workers 2 \
    --uvicorn-opts "--log-level warning" "$@"
