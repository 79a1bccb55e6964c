#!/bin/sh
# The builder stage's work, shared by Dockerfile.cpu and Dockerfile.cuda: split the lock's
# export into each stage's requirement files (docker/requirements.py; the runtime stage installs
# /opt/venv from them with docker/venv.sh), and the builder-only CycloneDX tool in /opt/sbom.
# With `tensorboard` and `mlflow`, each one's own small environment too (/opt/tensorboard,
# /opt/mlflow: no torch in either).
#   docker/build-env.sh FLAVOR [tensorboard] [mlflow]   (in /build, beside pyproject.toml, uv.lock)
set -eu
flavor=$1
uv export --frozen --no-emit-project --no-dev >export.txt
uv export --frozen --no-emit-project --no-dev --group test >test-export.txt
uv export --frozen --no-emit-project --no-dev --group notebook >notebook-export.txt
uv export --frozen --no-emit-project --no-dev --only-group sbom >sbom.txt
python3 requirements.py uv.lock export.txt test-export.txt notebook-export.txt . "$flavor"

uv venv --python "$(command -v python3)" /opt/sbom
VIRTUAL_ENV=/opt/sbom uv pip install --require-hashes --no-deps -r sbom.txt

shift
for extra in "$@"; do
    # No bytecode (each starts once and runs for hours; the images stay small), no test suites.
    uv venv --python "$(command -v python3)" "/opt/$extra"
    VIRTUAL_ENV="/opt/$extra" UV_COMPILE_BYTECODE=0 \
        uv pip install --require-hashes --no-deps -r "$extra.txt"
    find "/opt/$extra" -depth -type d \( -name tests -o -name __pycache__ \) -exec rm -rf {} +
    /opt/sbom/bin/cyclonedx-py environment --output-reproducible --of JSON \
        -o "/opt/$extra/sbom.json" "/opt/$extra/bin/python"
done
