#!/bin/sh
# The runtime stage's one install: /opt/venv from the requirement files the builder wrote
# (docker/build-env.sh), with their hashes checked; torch from TORCH_INDEX when it is set.
# Installed in the stage that ships it, with uv and /build mounted from the builder, rather than
# built there and copied: a copied environment is on the host's disk twice (the builder's layer,
# kept for the cache, and the copy), 5 to 6 GB more per image where torch comes from PyPI.
#   TORCH_INDEX=... sh venv.sh   (uv on PATH, /build mounted, the uv cache at /root/.cache/uv)
set -eu
# Bytecode is compiled at install (UV_COMPILE_BYTECODE): site-packages is read-only to the
# run-time user, and without .pyc files every start recompiles torch (seconds, each time).
export UV_SYSTEM_CERTS=1 UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1 UV_PYTHON_DOWNLOADS=never \
    UV_CACHE_DIR=/root/.cache/uv
uv venv --python "$(command -v python3)" /opt/venv
VIRTUAL_ENV=/opt/venv uv pip install --require-hashes --no-deps -r /build/rest.txt
if [ -z "${TORCH_INDEX:-}" ]; then
    VIRTUAL_ENV=/opt/venv uv pip install --require-hashes --no-deps -r /build/torch.txt
else
    VIRTUAL_ENV=/opt/venv uv pip install --index-url "$TORCH_INDEX" -c /build/rest.txt \
        -r /build/torch-pins.txt
fi
/opt/venv/bin/python -c "import torch, torchvision, torch._dynamo; print(torch.__version__)"
