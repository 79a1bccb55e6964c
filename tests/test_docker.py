"""The images, built and run by a real Docker engine with Docker Compose v2, as users run them.

Needs a running engine and the base image (docker/engine-up.sh and docker/base-image.sh do both
on a Debian host; .ci/run calls them). The torch index is the default one here: the PyTorch
wheel index cannot be reached from our CI machines.
"""

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Host dirs for /data and /runs, and a `compose(...)` that runs docker compose on them."""
    home = tmp_path_factory.mktemp("compose")
    (home / "data").mkdir()
    (home / "runs").mkdir()
    env = {
        **os.environ,
        "DATA_DIR": str(home / "data"),
        "RUNS_DIR": str(home / "runs"),
        "UID": str(os.getuid()),
        "GID": str(os.getgid()),
        "TORCH_INDEX_CPU": "",
        "TORCH_INDEX_CUDA": "",
    }

    def compose(*args, timeout=900, check=False, context=ROOT):
        out = subprocess.run(
            ["docker", "compose", "--project-directory", str(context), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check:
            assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        return out

    started = time.monotonic()
    compose("build", timeout=3600, check=True)
    print(f"\nbuilt both images in {time.monotonic() - started:.0f}s")
    compose.home = home
    return compose


def runs_of(home: Path) -> list[Path]:
    return sorted(p.parent for p in (home / "runs").rglob("metrics.json"))


def test_both_images_exist_with_their_settings(project):
    for tag in ("train:cpu", "train:cuda"):
        info = json.loads(
            subprocess.run(
                ["docker", "image", "inspect", tag], capture_output=True, text=True, check=True
            ).stdout
        )[0]
        print(f"{tag}: {info['Size'] / 1e9:.2f} GB")
        assert info["Config"]["User"] == "1000:1000"
        assert info["Config"]["Entrypoint"] == ["/app/docker/entrypoint.sh"]
    env = dict(e.split("=", 1) for e in info["Config"]["Env"])
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"


def test_train_in_the_image_writes_a_run_the_host_can_load(project):
    out = project("run", "--rm", "-T", "train", "data=digits", "trainer.max_epochs=2", check=True)
    assert "device: cpu (auto" in out.stdout
    (run,) = runs_of(project.home)
    for name in (
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        "metrics.json",
        ".hydra/config.yaml",
    ):
        path = run / name
        assert path.is_file(), name
        assert path.stat().st_uid == os.getuid(), f"{name} is not owned by the host user"
    assert list(run.glob("events.out.tfevents.*"))
    record = json.loads((run / "run.json").read_text())
    assert record["image"]["name"] == "train:cpu"
    assert record["image"]["base_image"] == "python:3.11-slim-bookworm"
    assert record["versions"]["torch"].startswith("2.13.0") and record["packages"]["hydra-core"]
    blob = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    model = instantiate(
        blob["config"]["model"],
        in_shape=tuple(blob["data"]["in_shape"]),
        num_outputs=blob["data"]["num_outputs"],
    )
    model.load_state_dict(blob["model"])
    assert model(torch.zeros(1, 1, 8, 8)).shape == (1, 10)


def test_torchrun_in_the_image_trains_on_two_processes(project):
    """The README's way to run DDP in the image (gloo on the CPU image; NCCL needs GPUs)."""
    out = project("run", "--rm", "-T", "train", "torchrun", "--standalone", "--nproc_per_node=2",
                  "-m", "train", "data=digits", "trainer.max_epochs=1", "name=ddp_digits",
                  check=True)  # fmt: skip
    assert "torchrun: 2 ranks (gloo), data.batch_size=32 per rank, 64 in all" in out.stdout
    (run,) = [r for r in runs_of(project.home) if r.parent.name == "ddp_digits"]
    assert (run / "checkpoints" / "last.pt").stat().st_uid == os.getuid()
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 1


def test_predict_and_export_in_the_image_with_read_only_inputs(project, tmp_path):
    """The README's way: the user's files mounted read-only, the run from the runs volume."""
    from PIL import Image
    from sklearn.datasets import load_digits

    run = next(r for r in runs_of(project.home) if (r / "checkpoints" / "best.pt").exists())
    inside = f"/runs/{run.relative_to(project.home / 'runs')}"
    digits = load_digits()
    for i in range(4):
        Image.fromarray(digits.images[i].astype("uint8")).save(tmp_path / f"{i}.png")
    out = project("run", "--rm", "-T", "-v", f"{tmp_path}:/inputs:ro", "train", "python", "-m",
                  "train.predict", f"run={inside}", "inputs=/inputs", check=True)  # fmt: skip
    lines = [ln.split("\t") for ln in out.stdout.splitlines() if ln.startswith("/inputs/")]
    assert [ln[0] for ln in lines] == [f"/inputs/{i}.png" for i in range(4)]
    assert all(ln[1] in digits.target_names.astype(str) and 0 < float(ln[2]) <= 1 for ln in lines)
    out = project("run", "--rm", "-T", "train", "python", "-m", "train.export", f"run={inside}",
                  check=True)  # fmt: skip
    assert "parity: max |difference|" in out.stdout
    assert (run / "checkpoints" / "model.onnx").stat().st_uid == os.getuid()


def test_tensorboard_becomes_healthy_and_lists_the_run(project):
    if not runs_of(project.home):
        project("run", "--rm", "-T", "train", "data=digits", "trainer.max_epochs=1", check=True)
    (run, *_) = runs_of(project.home)
    project("up", "-d", "tensorboard", check=True)
    try:
        cid = project("ps", "-q", "tensorboard", check=True).stdout.strip()
        status = ""
        for _ in range(60):
            status = subprocess.run(
                ["docker", "inspect", "-f", "{{.State.Health.Status}}", cid],
                capture_output=True,
                text=True,
            ).stdout.strip()
            if status == "healthy":
                break
            time.sleep(2)
        assert status == "healthy"
        ports = subprocess.run(["docker", "port", cid, "6006"], capture_output=True, text=True)
        assert ports.stdout.strip().startswith("127.0.0.1:"), "published beyond this machine"
        with urllib.request.urlopen("http://127.0.0.1:6006/data/runs", timeout=10) as r:
            listed = json.load(r)
        assert run.relative_to(project.home / "runs").as_posix() in listed
    finally:
        project("down", check=True)


def test_cuda_image_has_cuda_torch_and_falls_back_to_the_cpu(project):
    out = project(
        "run",
        "--rm",
        "-T",
        "train-cuda",
        "python",
        "-c",
        "import torch; print('cuda', torch.version.cuda)",
        check=True,
    )
    assert out.stdout.split()[-1][0].isdigit()
    out = project(
        "run", "--rm", "-T", "train-cuda", "data=digits", "trainer.max_steps=2", check=True
    )
    assert "auto: no CUDA device, falling back to CPU" in out.stdout
    out = project("run", "--rm", "-T", "train-cuda", "data=digits", "trainer.device=cuda")
    assert out.returncode == 2 and "no CUDA device is usable" in out.stderr


def test_bad_model_lists_the_models(project):
    out = project("run", "--rm", "-T", "train", "model=nope")
    assert out.returncode != 0
    assert "Could not find 'model/nope'" in out.stderr and "cnn" in out.stderr


def test_unknown_uid_trains_and_owns_its_files(project, tmp_path):
    runs = project.home / "runs-4242"
    runs.mkdir()
    os.chown(runs, 4242, 4242)
    out = project(
        "run",
        "--rm",
        "-T",
        "--user",
        "4242:4242",
        "-v",
        f"{runs}:/runs",
        "train",
        "data=digits",
        "trainer.max_steps=2",
        "paths.data_dir=/tmp/data",
        check=True,
    )
    assert "run dir" in out.stdout
    files = [p for p in runs.rglob("*") if p.is_file()]
    assert files and all(p.stat().st_uid == 4242 for p in files)


def test_doctor_and_fetch_in_the_image(project):
    out = project("run", "--rm", "-T", "train-doctor", check=True)
    assert "[OK  ] runs dir: /runs is writable" in out.stdout and "GPU" in out.stdout
    out = project("run", "--rm", "-T", "train-fetch", "data=digits", check=True)
    assert "ready in /data" in out.stdout
    assert (project.home / "data" / "digits" / "tensors.pt").is_file()


def test_offline_torchvision_data_fails_fast_naming_the_path(project):
    started = time.monotonic()
    out = project("run", "--rm", "-T", "train", "data=mnist", "data.download=false")
    assert out.returncode == 2 and "/data" in out.stderr and "data=digits" in out.stderr
    assert time.monotonic() - started < 60


def test_the_test_suite_passes_inside_the_cpu_image(project):
    out = project(
        "run",
        "--rm",
        "-T",
        "--user",
        "4242:4242",
        "train",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "/app/tests",
        timeout=1800,
    )
    assert out.returncode == 0, out.stdout[-4000:]
    assert " passed" in out.stdout.splitlines()[-1]


def test_code_only_change_rebuilds_without_reinstalling(project, tmp_path):
    """Dependencies are layers of their own: a change to train/ reuses them."""
    context = tmp_path / "context"
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for f in files:
        if (ROOT / f).is_file():
            (context / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, context / f)
    with open(context / "train" / "__init__.py", "a") as f:
        f.write(f"# a code change at {time.time()}\n")
    started = time.monotonic()
    out = project("--progress", "plain", "build", "train", context=context, check=True)
    seconds = time.monotonic() - started
    log = out.stdout + out.stderr
    print(f"\ncode-only rebuild of the CPU image: {seconds:.1f}s")
    steps = {line.split()[0] for line in log.splitlines() if "uv export --frozen" in line}
    assert steps, log[-3000:]
    for step in steps:  # the dependency layer: taken from the cache, not installed again
        assert f"{step} CACHED" in log, log[-3000:]
    assert "COPY train ./train" in log


def test_docker_stop_finishes_the_step_saves_and_exits_143(project):
    runs = project.home / "runs-stop"
    runs.mkdir()
    name = f"train-stop-{os.getpid()}"
    args = ["data=synthetic", "data.num_samples=3000", "model=cnn", "trainer.max_epochs=100"]
    out = project("run", "-d", "--name", name, "-v", f"{runs}:/runs", "train", *args, check=True)
    try:
        deadline = time.monotonic() + 300
        while not list(runs.rglob("last.pt")) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert list(runs.rglob("last.pt")), out.stdout
        subprocess.run(["docker", "stop", "-t", "60", name], check=True, capture_output=True)
        code = subprocess.run(["docker", "inspect", "-f", "{{.State.ExitCode}}", name],
                              capture_output=True, text=True).stdout.strip()  # fmt: skip
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True)
        assert code == "143", logs.stdout[-2000:] + logs.stderr[-2000:]
        assert "stopped by SIGTERM at step" in logs.stdout
        (last,) = runs.rglob("last.pt")
        blob = torch.load(last, weights_only=True)
        assert blob["state"]["step"] > 0
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


@pytest.mark.parametrize("tag", ["train:cpu", "train:cuda"])
def test_images_run_unprivileged_and_bake_in_no_secrets(project, tag):
    def sh(script, *args):
        return subprocess.run(["docker", "run", "--rm", *args, "--entrypoint", "sh", tag, "-c",
                               script], capture_output=True, text=True)  # fmt: skip

    assert sh("id -u").stdout.strip() == "1000"
    assert sh("touch /app/train/x").returncode != 0, "the code is writable by the runtime user"
    assert sh("touch /opt/venv/x").returncode != 0, "the environment is writable"
    assert sh("touch /app/train/x", "--user", "4242:4242").returncode != 0
    info = json.loads(subprocess.run(["docker", "image", "inspect", tag], capture_output=True,
                                     text=True, check=True).stdout)[0]  # fmt: skip
    env = "\n".join(info["Config"]["Env"])
    for word in ("TOKEN", "SECRET", "PASSWORD", "API_KEY", "AWS_"):
        assert word not in env.upper()
    history = subprocess.run(["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}",
                              tag], capture_output=True, text=True, check=True).stdout  # fmt: skip
    for host_path in (str(ROOT), "/root/.pyenv", "/tmp/pytest"):
        assert host_path not in history + env, f"{host_path} baked into {tag}"
    assert "python:3.11-slim-bookworm" in (ROOT / "Dockerfile.cpu").read_text()
    assert "--frozen" in history  # every package from the lock file


@pytest.mark.parametrize("tag", ["train:cpu", "train:cuda"])
def test_images_ship_compiled_bytecode(tag):
    """The run-time user cannot write site-packages: without .pyc files from the build, every
    start would compile torch's and sympy's sources again (seconds of start-up each time)."""
    script = (
        "import importlib.util, sys, torch._dynamo, hydra;"
        "mods = [m for m in list(sys.modules.values()) if getattr(m, '__file__', None)"
        " and m.__file__.startswith('/opt/venv') and m.__file__.endswith('.py')];"
        "missing = [m.__name__ for m in mods if not __import__('os').path.exists("
        "importlib.util.cache_from_source(m.__file__))];"
        "print(len(mods), len(missing), missing[:5])"
    )
    out = subprocess.run(["docker", "run", "--rm", "--entrypoint", "python", tag, "-c", script],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    loaded, missing, names = out.stdout.split(" ", 2)
    assert int(loaded) > 1000 and int(missing) == 0, out.stdout + out.stderr


def test_absent_data_with_the_network_off_fails_within_seconds(project):
    started = time.monotonic()
    out = subprocess.run(["docker", "run", "--rm", "--network", "none", "train:cpu",
                          "data=mnist"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 2, out.stdout + out.stderr
    assert "could not download MNIST into /data" in out.stderr and "data=digits" in out.stderr
    assert time.monotonic() - started < 30
