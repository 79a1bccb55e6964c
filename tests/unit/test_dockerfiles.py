"""Dockerfile.cpu and Dockerfile.cuda: each a complete multi-stage file that builds alone, the
stages both have (base, builder, runtime, jupyter) the same text in each so the two cannot drift,
and compose building every image from the file that holds its stage."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SHARED = ["base", "builder", "runtime", "jupyter"]


def stages(name: str) -> dict[str, str]:
    """Each stage's text, from its FROM line to the next stage's (section rules left out)."""
    out, current = {}, None
    for line in (ROOT / name).read_text().splitlines():
        if match := re.match(r"FROM \S+ AS (\w+)", line):
            current = match[1]
            out[current] = []
        if current and not line.startswith("# ---"):
            out[current].append(line)
    return {k: "\n".join(v).strip() for k, v in out.items()}


def test_each_file_has_its_images_stages():
    assert list(stages("Dockerfile.cpu")) == ["base", "builder", "runtime", "cpu", "test",
                                              "jupyter", "tensorboard", "mlflow"]  # fmt: skip
    assert list(stages("Dockerfile.cuda")) == ["base", "builder", "runtime", "cuda", "jupyter"]


def test_the_shared_stages_are_the_same_text_in_both_files():
    cpu, cuda = stages("Dockerfile.cpu"), stages("Dockerfile.cuda")
    for name in SHARED:
        assert cpu[name] == cuda[name], f"stage {name} differs between the two Dockerfiles"
    for name, flavor in (("Dockerfile.cpu", "cpu"), ("Dockerfile.cuda", "cuda")):
        text = (ROOT / name).read_text()
        assert f"\nARG FLAVOR={flavor}\n" in text  # (jupyter's FROM ${FLAVOR}, the torch split)


def test_the_environment_is_installed_in_the_stage_that_ships_it():
    """Not built in the builder and copied: a copied environment is on the host's disk twice
    (the builder's layer, kept for the cache, and the copy), 5 to 6 GB per image with PyPI's
    torch (docs/docker.md has the measured figures)."""
    for name in ("Dockerfile.cpu", "Dockerfile.cuda"):
        assert "sh /venv.sh" in stages(name)["runtime"]
        assert not re.search(r"COPY --from=builder\S* /opt/venv", (ROOT / name).read_text())
    script = (ROOT / "docker" / "build-env.sh").read_text().splitlines()
    assert not [line for line in script if "/opt/venv" in line and not line.startswith("#")]


class ComposeLoader(yaml.SafeLoader):
    """compose's own tags (!reset, !override) read as plain values."""


ComposeLoader.add_multi_constructor("!", lambda loader, tag, node: None)


def test_compose_builds_each_image_from_the_file_that_holds_its_stage():
    compose = yaml.load((ROOT / "compose.yaml").read_text(), ComposeLoader)
    gpu = yaml.load((ROOT / "compose.gpu.yaml").read_text(), ComposeLoader)
    files = {
        "Dockerfile.cpu": stages("Dockerfile.cpu"),
        "Dockerfile.cuda": stages("Dockerfile.cuda"),
    }
    builds = [s["build"] for s in compose["services"].values() if "build" in s]
    builds += [s["build"] for s in gpu["services"].values() if "build" in s]
    default = compose["x-build"]["dockerfile"]
    for build in builds:
        dockerfile = build.get("dockerfile", default)
        assert build["target"] in files[dockerfile], (dockerfile, build["target"])
    cuda_builds = [s["build"] for s in gpu["services"].values() if "build" in s]
    assert cuda_builds and all(b["dockerfile"] == "Dockerfile.cuda" for b in cuda_builds)
