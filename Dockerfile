# The images, one stage each (compose.yaml builds them; `make help`):
#   cpu          train:cpu   python -m train on any machine with Docker (Linux, macOS, Windows)
#   cuda         train:cuda  the same on GPU hosts, through the NVIDIA container runtime
#   test         train:test  the cpu stage plus pytest and the test suite (make test-docker)
#   tensorboard  train:tensorboard  TensorBoard alone, to watch the runs
# The runtime stages hold the virtual environment and the package: no uv, no pip caches, no
# test tools. Every package is installed from uv.lock with its hashes checked; torch and
# torchvision from TORCH_INDEX when it is set (their hashes are then that index's: see README).
# The Python base is pinned by name; docker/base-image.sh builds it locally where no registry
# can be reached. Layers go from least to most often changed: a code change rebuilds in seconds.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS base
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# Extra CA certificates (e.g. a corporate TLS proxy's): *.crt files in docker/certs/. tini: a
# real PID 1 that forwards docker stop's SIGTERM, also under a plain `docker run`.
COPY docker/certs/ /usr/local/share/ca-certificates/extra/
RUN update-ca-certificates \
 && apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*
LABEL org.opencontainers.image.title="train" io.train.project="train"

# --- the build: uv, the lock's requirements, the environments -----------------------------------
FROM base AS builder
ARG UV_VERSION=0.13.9
# Where torch and torchvision come from (at the versions uv.lock pins). Empty: the default index
# (PyPI), whose torch is a CUDA 13 build, installed with the lock's hashes.
ARG TORCH_INDEX=""
ARG FLAVOR=cpu
# Bytecode is compiled at install (UV_COMPILE_BYTECODE): site-packages is read-only to the
# run-time user, and without .pyc files every start recompiles torch (seconds, each time).
ENV UV_SYSTEM_CERTS=1 UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1 UV_PYTHON_DOWNLOADS=never \
    UV_CACHE_DIR=/root/.cache/uv PIP_CACHE_DIR=/root/.cache/pip
RUN --mount=type=cache,target=/root/.cache/pip pip install "uv==${UV_VERSION}"
WORKDIR /build
COPY pyproject.toml uv.lock docker/requirements.py ./
RUN set -eu; \
    uv export --frozen --no-emit-project --no-dev >export.txt; \
    uv export --frozen --no-emit-project --no-dev --group test >test-export.txt; \
    python3 requirements.py uv.lock export.txt test-export.txt . "$FLAVOR"
RUN --mount=type=cache,target=/root/.cache/uv,id=uv-${FLAVOR} \
    set -eu; \
    uv venv --python "$(command -v python3)" /opt/venv; \
    export VIRTUAL_ENV=/opt/venv; \
    uv pip install --require-hashes --no-deps -r rest.txt; \
    if [ -z "$TORCH_INDEX" ]; then \
        uv pip install --require-hashes --no-deps -r torch.txt; \
    else \
        uv pip install --index-url "$TORCH_INDEX" -c rest.txt -r torch-pins.txt; \
    fi; \
    /opt/venv/bin/python -c "import torch, torchvision, torch._dynamo; print(torch.__version__)"
# TensorBoard's own environment: no bytecode (it starts once and runs for hours; the image
# stays small), no test suites of its packages.
RUN --mount=type=cache,target=/root/.cache/uv,id=uv-tb \
    uv venv --python "$(command -v python3)" /opt/tensorboard \
 && VIRTUAL_ENV=/opt/tensorboard UV_COMPILE_BYTECODE=0 \
        uv pip install --require-hashes --no-deps -r tensorboard.txt \
 && find /opt/tensorboard -depth -type d \( -name tests -o -name __pycache__ \) \
        -exec rm -rf {} +

# --- the runtime: the environment and the package, run by any UID --------------------------------
FROM base AS runtime
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
COPY --from=builder /opt/venv /opt/venv
# Any UID may run the image (compose passes the host user's): HOME and every cache torch
# writes are writable by all, and nothing looks the UID up in /etc/passwd. With a read-only
# root file system (compose.yaml), HOME and /tmp are tmpfs mounts instead.
RUN mkdir -p /home/train /tmp/cache /data /runs && chmod 1777 /home/train /tmp/cache /data /runs
ENV TRAIN_DATA_DIR=/data \
    TRAIN_RUNS_DIR=/runs \
    HOME=/home/train \
    XDG_CACHE_HOME=/tmp/cache \
    TORCH_HOME=/tmp/cache/torch \
    TORCHINDUCTOR_CACHE_DIR=/tmp/cache/inductor \
    TRITON_CACHE_DIR=/tmp/cache/triton \
    MPLCONFIGDIR=/tmp/cache/matplotlib
WORKDIR /app
COPY docker/entrypoint.sh /app/docker/entrypoint.sh
COPY conf ./conf
COPY train ./train
COPY hydra_plugins ./hydra_plugins
# The package is /app/train on the path (no copy into site-packages): a code change is this
# layer alone.
RUN echo /app >"$(python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/train.pth" \
 && python -m compileall -q train hydra_plugins
# The run record (run.json) reads these: which image, built from what. Declared after every
# RUN, so a new commit does not invalidate the cached layers above.
ARG IMAGE_NAME
ARG GIT_COMMIT=""
ARG BASE_IMAGE
ARG TORCH_INDEX=""
ENV TRAIN_IMAGE=${IMAGE_NAME} TRAIN_TORCH_INDEX=${TORCH_INDEX} TRAIN_BASE_IMAGE=${BASE_IMAGE} \
    TRAIN_GIT_COMMIT=${GIT_COMMIT}
USER 1000:1000
ENTRYPOINT ["tini", "--", "/app/docker/entrypoint.sh"]

FROM runtime AS cpu

FROM runtime AS cuda
# What the NVIDIA container runtime reads: expose the GPUs (compute and nvidia-smi), and refuse
# to start on a driver too old for the wheels' CUDA (e.g. "cuda>=12.8" for cu128 wheels).
ARG CUDA_REQUIRE="cuda>=12.8"
ENV NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    NVIDIA_REQUIRE_CUDA=${CUDA_REQUIRE}
RUN python -c "import os, torch; want = os.environ['NVIDIA_REQUIRE_CUDA'].split('>=')[1]; \
have = torch.version.cuda; assert have and want == '.'.join(have.split('.')[:2]), \
f'CUDA_REQUIRE={want} but the torch wheels are built for CUDA {have}: set both together'"

# --- the test stage: the cpu image plus the suite and its tools ---------------------------------
FROM cpu AS test
USER root
RUN --mount=type=bind,from=builder,source=/build,target=/build \
    --mount=type=bind,from=builder,source=/usr/local/bin/uv,target=/usr/local/bin/uv \
    UV_COMPILE_BYTECODE=1 uv pip install --python /opt/venv/bin/python --require-hashes \
        --no-deps -r /build/test.txt
COPY pyproject.toml uv.lock ./
COPY tests ./tests
COPY bench ./bench
COPY Dockerfile ./
COPY docker/k8s ./docker/k8s
USER 1000:1000

# --- TensorBoard alone ---------------------------------------------------------------------------
FROM base AS tensorboard
COPY --from=builder /opt/tensorboard /opt/tensorboard
ENV PATH=/opt/tensorboard/bin:$PATH HOME=/tmp
USER 1000:1000
EXPOSE 6006
ENTRYPOINT ["tini", "--", "tensorboard"]
CMD ["--logdir", "/runs", "--host", "0.0.0.0", "--port", "6006"]
