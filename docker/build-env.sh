#!/bin/sh
# The builder stage's work, shared by Dockerfile.cpu and Dockerfile.cuda: split the lock's
# export into each stage's requirement files (docker/requirements.py), install /opt/venv from
# them with their hashes checked (torch from TORCH_INDEX when it is set), and the builder-only
# CycloneDX tool in /opt/sbom. With `tensorboard`, TensorBoard's own small environment too.
#   docker/build-env.sh FLAVOR [tensorboard]        (in /build, beside pyproject.toml, uv.lock)
set -eu
flavor=$1
uv export --frozen --no-emit-project --no-dev >export.txt
uv export --frozen --no-emit-project --no-dev --group test >test-export.txt
uv export --frozen --no-emit-project --no-dev --group notebook >notebook-export.txt
uv export --frozen --no-emit-project --no-dev --only-group sbom >sbom.txt
python3 requirements.py uv.lock export.txt test-export.txt notebook-export.txt . "$flavor"

uv venv --python "$(command -v python3)" /opt/venv
VIRTUAL_ENV=/opt/venv uv pip install --require-hashes --no-deps -r rest.txt
if [ -z "${TORCH_INDEX:-}" ]; then
    VIRTUAL_ENV=/opt/venv uv pip install --require-hashes --no-deps -r torch.txt
else
    VIRTUAL_ENV=/opt/venv uv pip install --index-url "$TORCH_INDEX" -c rest.txt -r torch-pins.txt
fi
/opt/venv/bin/python -c "import torch, torchvision, torch._dynamo; print(torch.__version__)"

uv venv --python "$(command -v python3)" /opt/sbom
VIRTUAL_ENV=/opt/sbom uv pip install --require-hashes --no-deps -r sbom.txt

if [ "${2:-}" = tensorboard ]; then
    # No bytecode (it starts once and runs for hours; the image stays small), no test suites.
    uv venv --python "$(command -v python3)" /opt/tensorboard
    VIRTUAL_ENV=/opt/tensorboard UV_COMPILE_BYTECODE=0 \
        uv pip install --require-hashes --no-deps -r tensorboard.txt
    find /opt/tensorboard -depth -type d \( -name tests -o -name __pycache__ \) -exec rm -rf {} +
    /opt/sbom/bin/cyclonedx-py environment --output-reproducible --of JSON \
        -o /opt/tensorboard/sbom.json /opt/tensorboard/bin/python
fi
