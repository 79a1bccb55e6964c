#!/bin/sh
# The image's software bill of materials: every package in /opt/venv as CycloneDX JSON, by
# CycloneDX's own tool (the builder's /opt/sbom), into /app/sbom.json. Each stage that installs
# packages runs it again, so the SBOM lists what that image holds.
set -eu
exec /opt/sbom/bin/cyclonedx-py environment --pyproject /build/pyproject.toml \
    --output-reproducible --of JSON -o /app/sbom.json /opt/venv/bin/python
