"""The images, built and run by a real Docker engine with Docker Compose v2, as users run them.

Needs a running engine and the base image (docker/engine-up.sh and docker/base-image.sh do both
on a Debian host; .ci/run calls them). The torch index is the default one here: the PyTorch
wheel index cannot be reached from our CI machines.
"""

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = ["Dockerfile.cpu", "Dockerfile.cuda"]


ENV = {"TORCH_INDEX_CPU": "", "TORCH_INDEX_CUDA": "", "CUDA_REQUIRE": "cuda>=13.0"}  # PyPI's


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Host dirs for /data and /runs, and a `compose(...)` that runs docker compose on them."""
    home = tmp_path_factory.mktemp("compose")
    (home / "data").mkdir()
    (home / "runs").mkdir()
    env = {
        **os.environ,
        **ENV,
        "DATA_DIR": str(home / "data"),
        "RUNS_DIR": str(home / "runs"),
        "UID": str(os.getuid()),
        "GID": str(os.getgid()),
        "TRAIN_ALLOW_ROOT": "1",  # (CI is root; the non-root quick start has its own test)
        "JUPYTER_TOKEN": "t0ken-for-the-docker-tier",
        "NOTEBOOKS_DIR": str(home / "notebooks"),  # (a copy: Jupyter writes beside them)
        "GIT_COMMIT": "0123456789abcdef0123456789abcdef01234567",  # (what make build passes)
        "IMAGE_CREATED": "2026-12-02T03:00:00Z",
    }
    shutil.copytree(ROOT / "notebooks", home / "notebooks")

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
    compose("build", "train", "tensorboard", "mlflow", "jupyter", timeout=3600, check=True)
    compose("--profile", "test", "build", "train-test", timeout=3600, check=True)
    compose("--profile", "cuda", "build", "train-cuda", timeout=3600, check=True)
    print(f"\nbuilt the images in {time.monotonic() - started:.0f}s")
    compose.home = home
    compose.env = env
    return compose


def runs_of(home: Path, marker: str = "metrics.json") -> list[Path]:
    return sorted(p.parent for p in (home / "runs").rglob(marker))


def inspect(tag: str) -> dict:
    return json.loads(subprocess.run(["docker", "image", "inspect", tag], capture_output=True,
                                     text=True, check=True).stdout)[0]  # fmt: skip


def test_the_images_and_their_settings(project):
    sizes = {}
    for tag in ("train:cpu", "train:cuda", "train:test", "train:tensorboard", "train:mlflow"):
        info = inspect(tag)
        sizes[tag] = info["Size"]
        assert info["Config"]["User"] == "1000:1000"
        assert info["Config"]["Entrypoint"][:2] == ["tini", "--"]  # an init, also for docker run
    print("\nimage sizes: " + ", ".join(f"{t} {b / 1e9:.2f} GB" for t, b in sizes.items()))
    assert sizes["train:tensorboard"] < 0.5e9
    assert sizes["train:mlflow"] < 1.5e9  # (MLflow's server and UI; no torch)
    env = dict(e.split("=", 1) for e in inspect("train:cuda")["Config"]["Env"])
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
    assert env["NVIDIA_REQUIRE_CUDA"] == "cuda>=13.0"  # a too-old driver fails at start
    assert "NVIDIA_VISIBLE_DEVICES" not in "".join(inspect("train:cpu")["Config"]["Env"])


def test_the_runtime_images_carry_no_build_or_test_tools(project):
    """Multi-stage: uv, pip's and uv's caches, pytest, hypothesis and tests/ stay in the build
    and test stages; the CPU image has no Triton (0.7 GB it cannot use)."""
    script = ("import importlib.util as u, os, shutil;"
              "print([m for m in ('pytest', 'hypothesis', 'triton', 'uv') if u.find_spec(m)],"
              " shutil.which('uv'), os.path.exists('/app/tests'),"
              " os.path.exists('/root/.cache/uv'), u.find_spec('torch') is not None)")  # fmt: skip
    for tag, want in (("train:cpu", "[] None False False True"),
                      ("train:cuda", "['triton'] None False False True"),
                      ("train:test", "['pytest', 'hypothesis'] None True False True")):  # fmt: skip
        out = subprocess.run(["docker", "run", "--rm", "--entrypoint", "python", tag, "-c",
                              script], capture_output=True, text=True, check=True)  # fmt: skip
        assert out.stdout.strip() == want, (tag, out.stdout)
    # Every install checks the lock's hashes, but torch's from another index (README says why).
    installs = [ln for f in DOCKERFILES + ["docker/build-env.sh", "docker/venv.sh"]
                for ln in (ROOT / f).read_text().splitlines() if "pip install" in ln]  # fmt: skip
    assert installs and all("--require-hashes" in ln or '--index-url "$TORCH_INDEX"' in ln
                            or "uv==" in ln for ln in installs), installs  # fmt: skip


def test_train_in_the_image_writes_a_run_the_host_can_load(project):
    out = project("run", "--rm", "-T", "train", "data=digits", "trainer.max_epochs=2", check=True)
    assert "device: cpu, auto" in out.stdout
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
    assert record["image"]["git_commit"] == project.env["GIT_COMMIT"]
    assert record["image"]["created"] == project.env["IMAGE_CREATED"]
    assert record["lock"]["sha256"] == hashlib.sha256((ROOT / "uv.lock").read_bytes()).hexdigest()
    assert record["host"]["cpu"] and record["host"]["gpus"] == []
    labels = inspect("train:cpu")["Config"]["Labels"]
    assert labels["org.opencontainers.image.revision"] == project.env["GIT_COMMIT"]
    blob = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    model = instantiate(
        blob["config"]["model"],
        in_shape=tuple(blob["data"]["in_shape"]),
        num_outputs=blob["data"]["num_outputs"],
    )
    model.load_state_dict(blob["model"])
    assert model(torch.zeros(1, 1, 8, 8)).shape == (1, 10)


@pytest.mark.parametrize(
    "tag, path",
    [
        ("train:cpu", "/app/sbom.json"),
        ("train:cuda", "/app/sbom.json"),
        ("train:jupyter", "/app/sbom.json"),
        ("train:tensorboard", "/opt/tensorboard/sbom.json"),
        ("train:mlflow", "/opt/mlflow/sbom.json"),
    ],
)
def test_each_image_carries_a_cyclonedx_sbom_of_its_environment(project, tag, path):
    out = subprocess.run(["docker", "run", "--rm", "--entrypoint", "cat", tag, path],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    sbom = json.loads(out.stdout)
    assert sbom["bomFormat"] == "CycloneDX" and sbom["specVersion"].startswith("1.")
    listed = {c["name"].lower(): c["version"] for c in sbom["components"]}
    pinned = _locked_versions()
    if tag in ("train:tensorboard", "train:mlflow"):
        name = tag.split(":")[1]
        assert listed[name] == pinned[name] and "torch" not in listed
        return
    assert listed["torch"].split("+")[0] == pinned["torch"] and "cyclonedx-bom" not in listed
    assert ("jupyterlab" in listed) == (tag == "train:jupyter")


def _locked_versions() -> dict[str, str]:
    import tomllib

    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return {p["name"]: p["version"] for p in lock["package"] if "version" in p}


def test_torchrun_in_the_image_trains_on_two_processes(project):
    """The README's way to run DDP in the image (gloo on the CPU image; NCCL needs GPUs)."""
    out = project("run", "--rm", "-T", "train", "python", "-m", "train.launch", "--standalone",
                  "--nproc_per_node=2", "-m", "train", "data=digits", "trainer.max_epochs=1",
                  "name=ddp_digits", check=True)  # fmt: skip
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
    for i in range(4):  # ordinary 8-bit PNGs, as an image tool writes them
        Image.fromarray((digits.images[i] * 255 / 16).round().astype("uint8")).save(
            tmp_path / f"{i}.png")  # fmt: skip
    out = project("run", "--rm", "-T", "-v", f"{tmp_path}:/inputs:ro", "train", "python", "-m",
                  "train.predict", f"run={inside}", "inputs=/inputs", check=True)  # fmt: skip
    lines = [ln.split("\t") for ln in out.stdout.splitlines() if ln.startswith("/inputs/")]
    assert [ln[0] for ln in lines] == [f"/inputs/{i}.png" for i in range(4)]
    assert all(ln[1] in digits.target_names.astype(str) and 0 < float(ln[2]) <= 1 for ln in lines)
    out = project("run", "--rm", "-T", "train", "python", "-m", "train.export", f"run={inside}",
                  check=True)  # fmt: skip
    assert "parity: max |difference|" in out.stdout
    assert (run / "checkpoints" / "model.onnx").stat().st_uid == os.getuid()


def test_a_search_in_the_image_keeps_its_study_on_the_runs_volume(project):
    """python -m train.tune in the CPU image: the study (SQLite) and its trials on /runs, owned
    by the host user, and continued by a second call."""
    args = ["python", "-m", "train.tune", "data=digits", "trainer.max_epochs=3",
            "tune.study=docker", "tune.n_trials=2"]  # fmt: skip
    out = project("run", "--rm", "-T", "train", *args, check=True)
    assert "retrain it: python -m train data=digits" in out.stdout
    study = project.home / "runs" / "tune" / "docker"
    assert (study / "study.db").stat().st_uid == os.getuid()
    assert {"trial-0", "trial-1", "summary.json", "history.png"} <= {
        p.name for p in study.iterdir()
    }
    out = project("run", "--rm", "-T", "train", *args[:-1], "tune.n_trials=1", check=True)
    assert "study docker: 3 trials" in out.stdout


def test_two_containers_train_as_two_torchrun_nodes_into_one_run(project, tmp_path):
    """make train-multinode: two containers of the CPU image as two machines (one process each,
    a c10d rendezvous at node0 by its service name over the compose network), one run dir on
    the shared runs volume, written by rank 0 alone, with a world of 2 in its record."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    runs = tmp_path / "runs"
    runs.mkdir()
    env = {**project.env, "RUNS_DIR": str(runs)}
    args = "ARGS=data=digits trainer.max_epochs=2"
    out = subprocess.run(["make", "train-multinode", args], cwd=clone, env=env,
                         capture_output=True, text=True, timeout=900)  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (run,) = (p.parent for p in runs.rglob("metrics.json"))
    record = json.loads((run / "run.json").read_text())
    assert record["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert "torchrun: 2 ranks (gloo)" in out.stdout
    assert not [
        c
        for c in subprocess.run(
            ["docker", "ps", "-aq", "-f", "name=train-node"], capture_output=True, text=True
        ).stdout.split()
    ]


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
        name = run.relative_to(project.home / "runs").as_posix()
        assert name in listed
        url = "http://127.0.0.1:6006/data/plugin/scalars/tags"
        with urllib.request.urlopen(url, timeout=10) as r:
            tags = json.load(r)[name]
        # the curves first, then the run's vitals; no "hparam/..." cards
        assert sorted({t.split("/")[0] for t in tags}) == ["train", "val", "vitals"]
        said = project("logs", "tensorboard", check=True).stdout
        assert "open http://127.0.0.1:6006/" in said and "0.0.0.0" not in said, said
        seen = screenshot("http://127.0.0.1:6006/?darkMode=false#timeseries", project.home)
        assert "<tb-webapp" in seen  # the page loaded (the run's listing: /data/runs, above)
    finally:
        project("down", check=True)


def healthy(project, service: str, tries: int = 90) -> str:
    """Wait for `service`'s healthcheck; its container id."""
    cid = project("ps", "-q", service, check=True).stdout.strip()
    status = ""
    for _ in range(tries):
        status = subprocess.run(["docker", "inspect", "-f", "{{.State.Health.Status}}", cid],
                                capture_output=True, text=True).stdout.strip()  # fmt: skip
        if status == "healthy":
            return cid
        time.sleep(2)
    raise AssertionError(f"{service} is {status}: {project('logs', service).stdout[-3000:]}")


def test_mlflow_shows_a_run_trained_in_the_cpu_image(project):
    """docker compose run train ... logger=[tensorboard,mlflow], then docker compose up mlflow:
    its UI on 127.0.0.1 only, the run and its artifacts served from the runs volume, as a
    person sees it in headless Chromium."""
    from mlflow.tracking import MlflowClient

    project("run", "--rm", "-T", "train", "data=digits", "trainer.max_epochs=2",
            "logger=[tensorboard,mlflow]", "name=tracked", check=True)  # fmt: skip
    (run,) = sorted(p.parent for p in (project.home / "runs" / "tracked").rglob("metrics.json"))
    project("up", "-d", "mlflow", check=True)
    try:
        cid = healthy(project, "mlflow")
        ports = subprocess.run(["docker", "port", cid, "5000"], capture_output=True, text=True)
        assert ports.stdout.strip().startswith("127.0.0.1:"), "published beyond this machine"
        said = project("logs", "mlflow", check=True).stdout
        assert "open http://127.0.0.1:5000/" in said, said  # (where a browser goes; no request
        assert "Uvicorn running on" not in said and "GET /health" not in said, said  # log)
        client = MlflowClient("http://127.0.0.1:5000")
        experiment = client.get_experiment_by_name("tracked")
        (found,) = client.search_runs([experiment.experiment_id])
        record = json.loads((run / "run.json").read_text())
        assert found.info.run_id == record["tracking"]["mlflow"]["run_id"]
        assert found.info.status == "FINISHED" and found.data.params["data._target_"].endswith(
            "digits")  # fmt: skip
        assert len(client.get_metric_history(found.info.run_id, "val/loss")) == 2
        url = f"http://127.0.0.1:5000/api/2.0/mlflow/artifacts/list?run_id={found.info.run_id}"
        with urllib.request.urlopen(url, timeout=10) as r:  # (served from the runs volume)
            kept = {f["path"] for f in json.load(r)["files"]}
        assert {"checkpoints", "summary.txt", "metrics.json", "viz"} <= kept
        page = f"http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}/runs/" \
            f"{found.info.run_id}"  # fmt: skip
        seen = screenshot(page, project.home, "mlflow-run.png")
        assert found.info.run_name in seen, seen[-2000:]  # (the run's page rendered)
    finally:
        project("down", check=True)


def screenshot(url: str, where: Path, name: str = "tensorboard-scalars.png") -> str:
    """The page as a person sees it: headless Chromium's screenshot (its path printed: CI keeps
    it as an artifact) and its rendered DOM, which is returned."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is needed (.ci/run installs it)"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={where / 'chromium'}", "--window-size=1400,1000",
             "--virtual-time-budget=20000"]  # fmt: skip
    png = Path(os.environ.get("TRAIN_ARTIFACTS", where)) / name
    png.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([chromium, *flags, f"--screenshot={png}", url], capture_output=True,
                   timeout=120)  # fmt: skip
    print(f"\nscreenshot: {png} ({png.stat().st_size:,} bytes)")
    dom = subprocess.run([chromium, *flags, "--dump-dom", url], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    return dom.stdout


def jupyter_up(project) -> str:
    """JupyterLab and TensorBoard up (healthy); JupyterLab's URL."""
    project("up", "-d", "jupyter", "tensorboard", check=True)
    for service in ("jupyter", "tensorboard"):
        cid = project("ps", "-q", service, check=True).stdout.strip()
        for _ in range(90):
            health = subprocess.run(["docker", "inspect", "-f", "{{.State.Health.Status}}", cid],
                                    capture_output=True, text=True).stdout.strip()  # fmt: skip
            if health == "healthy":
                break
            time.sleep(2)
        assert health == "healthy", project("logs", service).stdout[-3000:]
    return "http://127.0.0.1:8888"


def test_jupyterlab_serves_the_notebooks_behind_its_token_and_its_kernel_trains(project):
    """docker compose up jupyter: JupyterLab on 127.0.0.1 only, every request without the token
    refused; the page shows the course's notebooks; a kernel started through the server's REST
    API trains digits in the container, into the runs dir TensorBoard serves."""
    import urllib.error

    import websocket

    token = project.env["JUPYTER_TOKEN"]
    try:
        url = jupyter_up(project)
        cid = project("ps", "-q", "jupyter", check=True).stdout.strip()
        ports = subprocess.run(["docker", "port", cid, "8888"], capture_output=True, text=True)
        assert ports.stdout.strip().startswith("127.0.0.1:"), "published beyond this machine"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/api/contents", timeout=10)
        assert refused.value.code == 403
        with urllib.request.urlopen(f"{url}/api/contents?token={token}", timeout=10) as r:
            names = {item["name"] for item in json.load(r)["content"]}
        assert "02_linear_regression.ipynb" in names and len(names) >= 15
        dom = screenshot(f"{url}/lab/tree/02_linear_regression.ipynb?token={token}",
                         project.home, "jupyterlab.png")  # fmt: skip
        assert "02_linear_regression.ipynb" in dom
        request = urllib.request.Request(f"{url}/api/kernels?token={token}", data=b"{}",
                                         method="POST")  # fmt: skip
        with urllib.request.urlopen(request, timeout=60) as r:
            kernel = json.load(r)["id"]
        said = run_in_kernel(websocket, f"ws://127.0.0.1:8888/api/kernels/{kernel}/channels"
                             f"?token={token}", "from train import api\n"
                             "r = api.train('data=digits', 'trainer.max_epochs=1')\n"
                             "print('RUN', r.run_dir)")  # fmt: skip
        run = next(line.split()[1] for line in said.splitlines() if line.startswith("RUN "))
        assert run.startswith("/runs/digits_mlp/"), said[-2000:]
        on_host = project.home / "runs" / Path(run).relative_to("/runs")
        assert (on_host / "checkpoints" / "best.pt").is_file()
        name, listed = Path(run).relative_to("/runs").as_posix(), []
        for _ in range(30):  # (TensorBoard looks for new runs every few seconds)
            with urllib.request.urlopen("http://127.0.0.1:6006/data/runs", timeout=10) as r:
                listed = json.load(r)
            if name in listed:
                break
            time.sleep(2)
        assert name in listed, listed
    finally:
        project("down", check=True)


def run_in_kernel(websocket, url: str, code: str, timeout: float = 300) -> str:
    """Run `code` in a Jupyter kernel over its websocket (the protocol JupyterLab speaks); its
    printed output. A cell that raises fails the test with its traceback."""
    import uuid

    ws = websocket.create_connection(url, timeout=timeout)
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                   "session": uuid.uuid4().hex, "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False},
    }))  # fmt: skip
    out, deadline = "", time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = json.loads(ws.recv())
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            out += content["text"]
        elif kind == "error":
            pytest.fail("the cell raised: " + "\n".join(content["traceback"])[-3000:])
        elif kind == "status" and content["execution_state"] == "idle":
            break
    ws.close()
    return out


def test_the_notebooks_run_in_the_jupyter_image(project):
    started = time.monotonic()
    out = project("run", "--rm", "-T", "jupyter", "sh", "-c",
                  "cd /tmp && for n in /app/notebooks/*.ipynb; do "
                  "MPLBACKEND=agg jupyter execute --timeout=300 \"$n\" || exit 1; done",
                  timeout=1800)  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    print(f"\nthe notebooks in the image: {time.monotonic() - started:.0f}s")
    assert len(list((project.home / "runs").rglob("events.out.tfevents.*"))) >= 5


def test_your_model_from_code_trains_in_the_cpu_image_as_a_non_root_user(project, tmp_path):
    code, runs = tmp_path / "code", tmp_path / "runs"
    code.mkdir()
    runs.mkdir(mode=0o777)
    runs.chmod(0o777)
    (code / "net.py").write_text(
        "import math\nfrom torch import nn\n\n\nclass Net(nn.Module):\n"
        "    def __init__(self, in_shape, num_outputs, hidden=32):\n        super().__init__()\n"
        "        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), hidden),"
        " nn.ReLU(), nn.Linear(hidden, num_outputs))\n\n"
        "    def forward(self, x):\n        return self.fc(x)\n")  # fmt: skip
    out = project("run", "--rm", "-T", "-u", "1000:1000", "-v", f"{code}:/code:ro", "-v",
                  f"{runs}:/runs", "train", "data=digits", "model=custom",
                  "model.code=/code/net.py", "model.args={hidden: 16}",
                  "trainer.max_epochs=2")  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (record,) = runs.rglob("run.json")
    origin = json.loads(record.read_text())["origin"]["model"]
    assert origin["file"] == "/code/net.py" and len(origin["sha256"]) == 64
    assert {p.stat().st_uid for p in runs.rglob("*")} == {1000}


def test_cuda_image_has_cuda_torch_and_falls_back_to_the_cpu(project):
    out = project(
        "--profile",
        "cuda",
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
    cuda = ("--profile", "cuda", "run", "--rm", "-T", "train-cuda", "data=digits")
    out = project(*cuda, "trainer.max_steps=2", check=True)
    assert "auto: no CUDA device, falling back to CPU" in out.stdout
    out = project(*cuda, "trainer.device=cuda")
    assert out.returncode == 2 and "no CUDA device is usable" in out.stderr


def test_bad_model_lists_the_models(project):
    out = project("run", "--rm", "-T", "train", "model=nope")
    assert out.returncode == 2 and out.stderr.count("error:") == 1, out.stderr
    assert "'nope' is not an option of model" in out.stderr and "cnn" in out.stderr


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
    """The fast tier in the test stage, as an unknown UID on the read-only root file system
    (the tests that mount file systems need root: they run on the host)."""
    out = project("--profile", "test", "run", "--rm", "-T", "--user", "4242:4242", "train-test",
                  "pytest", "-q", "-p", "no:cacheprovider", "-m",
                  "not docker and not slow and not gpu and not mounts", "/app/tests",
                  timeout=2400)  # fmt: skip
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
    out = subprocess.run(["make", "build", "build-cuda", "COMPOSE=docker compose --progress plain"],
                         cwd=context, env=project.env, capture_output=True, text=True,
                         timeout=1800)  # fmt: skip
    seconds = time.monotonic() - started
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    print(f"\ncode-only rebuild of the CPU, TensorBoard, MLflow and CUDA images: {seconds:.1f}s")
    # The dependency layers of both files (the builder's RUN, the runtime's venv): from the cache.
    # (Step numbers restart in each of make's two builds: each step's next line is its own.)
    lines = log.splitlines()
    titles = [i for i, ln in enumerate(lines) if "sh build-env.sh" in ln or "sh /venv.sh" in ln]
    assert len(titles) >= 4, log[-3000:]
    for i in titles:
        step = lines[i].split()[0]
        assert next(ln for ln in lines[i + 1 :] if ln.startswith(step + " ")) == f"{step} CACHED"
    assert "COPY train ./train" in log
    assert log.count("naming to docker.io/library/train:") == 4  # one build of each image
    dangling = subprocess.run(["docker", "images", "-q", "-f", "dangling=true", "-f",
                               "label=io.train.project=train"], capture_output=True,
                              text=True).stdout.split()  # fmt: skip
    assert dangling == [], "a rebuild left the old images behind"


@pytest.mark.parametrize(
    "dockerfile, target", [("Dockerfile.cpu", "cpu"), ("Dockerfile.cuda", "cuda")]
)
def test_each_dockerfile_builds_alone(project, dockerfile, target, tmp_path):
    """One file and the build context, nothing of compose.yaml: a project that names only the
    Dockerfile (with the build arguments this machine needs: torch from PyPI, whose CUDA is 13),
    and the image trains. (`docker build -f` is the same build where the CLI has buildx; this
    host's CLI has none, and its legacy builder cannot run RUN --mount, so compose's BuildKit
    builds it.)"""
    tag = f"train-alone:{target}"
    alone = {"services": {"alone": {"image": tag, "build": {
        "context": str(ROOT), "dockerfile": dockerfile, "target": target,
        "args": {"TORCH_INDEX": "", "CUDA_REQUIRE": "cuda>=13.0"}}}}}  # fmt: skip
    (tmp_path / "alone.yaml").write_text(json.dumps(alone))
    out = subprocess.run(["docker", "compose", "-p", "alone", "-f", str(tmp_path / "alone.yaml"),
                          "build"], capture_output=True, text=True, timeout=3600)  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    try:
        ran = subprocess.run(["docker", "run", "--rm", tag, "--cfg", "job", "data=digits"],
                             capture_output=True, text=True, timeout=300)  # fmt: skip
        assert ran.returncode == 0 and "_target_: train.data.sets.digits" in ran.stdout, ran.stderr
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


def test_docker_stop_finishes_the_step_saves_and_exits_143(project):
    runs = project.home / "runs-stop"
    runs.mkdir()
    name = f"train-stop-{os.getpid()}"
    args = [
        "data=synthetic",
        "data.num_samples=3000",
        "model=cnn",
        "trainer.max_epochs=100",
        "trainer.checkpoint_every_s=0",
    ]  # (the test waits for the first epoch's last.pt)
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


def ctrl_c_in_a_terminal(project, args: list[str], wait_for: bytes, tty: bool = True):
    """`docker compose run --rm train ...` on a terminal (a pty, as a person's), ^C typed once
    `wait_for` is on the screen: the exit status and what the terminal showed. Without a TTY in
    the container (`tty=False`, run -T) the terminal's ^C is a SIGINT to its foreground group,
    sent here by hand (the child holds no controlling terminal). The terminal matters: when
    the docker CLI's output is not one, a SIGINT makes it close its compose plugin, which then
    may exit 130 before it passes the signal on, and the container runs on (docker/cli's
    design; docs/docker.md says how scripts stop a run)."""
    import pty
    import select

    master, slave = pty.openpty()
    run = ["run", "--rm", "train"] if tty else ["run", "--rm", "-T", "train"]
    child = subprocess.Popen(["docker", "compose", "--project-directory", str(ROOT), *run, *args],
                             stdin=slave, stdout=slave, stderr=slave, env=project.env,
                             start_new_session=True)  # fmt: skip
    os.close(slave)
    shown, typed, deadline = b"", False, time.monotonic() + 600
    while child.poll() is None and time.monotonic() < deadline:
        if select.select([master], [], [], 0.2)[0]:
            with contextlib.suppress(OSError):
                shown += os.read(master, 65536)
        if not typed and wait_for in shown:
            if tty:
                os.write(master, b"\x03")  # what Ctrl-C sends down a terminal
            else:
                os.killpg(child.pid, signal.SIGINT)  # what the terminal does on ^C
            typed = True
    with contextlib.suppress(OSError):
        while select.select([master], [], [], 0.5)[0] and (more := os.read(master, 65536)):
            shown += more
    os.close(master)
    return child.wait(timeout=60), shown.decode(errors="replace")


def test_ctrl_c_in_a_terminal_with_and_without_a_tty_exits_130_after_saving(project):
    """Ctrl-C during `docker compose run --rm train ...` exits 130 (scripts and schedulers read
    0 as success) once the run is saved, with a TTY in the container (^C is a byte down it)
    and without one (-T: the SIGINT reaches the docker CLI and its compose plugin, and compose
    passes it on, more than once: one request, not a kill mid-save)."""
    args = ["data=synthetic", "data.num_samples=3000", "model=cnn", "trainer.max_epochs=100",
            "trainer.print_every_s=0", "trainer.progress=lines"]  # fmt: skip
    for tty in (True, False):
        before = set(runs_of(project.home, "train.log"))
        code, shown = ctrl_c_in_a_terminal(project, args, b"epoch 1/100", tty)
        assert code == 130, shown[-3000:]
        assert "stopped by SIGINT at step" in shown and "continues the run" in shown, shown[-3000:]
        (run,) = set(runs_of(project.home, "train.log")) - before
        assert "stopped by SIGINT at step" in (run / "train.log").read_text()  # why it ended
        assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["state"]["step"] > 0


def test_a_host_path_the_container_cannot_see_says_which_folders_it_sees(project, tmp_path):
    out = project("run", "--rm", "-T", "train", "data=csv", "data.path=my.csv",
                  "data.target=y")  # fmt: skip
    assert out.returncode == 2, out.stdout + out.stderr
    assert "there is no such file or folder (/app/my.csv)" in out.stderr
    assert "./data on the host as /data" in out.stderr and "data.path=/data/my.csv" in out.stderr


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
    for name in DOCKERFILES:
        assert "ARG BASE_IMAGE=python:3.11-slim-bookworm" in (ROOT / name).read_text()
    assert "uv export --frozen" in (ROOT / "docker" / "build-env.sh").read_text()  # the lock's


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


def test_the_running_container_is_hardened(project):
    """No capabilities, no privilege gain, a read-only root with tmpfs where writes belong, and
    an init as PID 1."""
    script = ("grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; cat /proc/1/comm;"
              "touch /etc/x 2>/dev/null && echo root-writable || echo root-read-only;"
              "touch /tmp/x /home/train/x /runs/x && echo tmp-writable; rm -f /runs/x")  # fmt: skip
    out = project("run", "--rm", "-T", "train", "sh", "-c", script, check=True)  # (tini, then sh)
    lines = out.stdout.split()
    assert "0000000000000000" in lines and lines[lines.index("NoNewPrivs:") + 1] == "1", lines
    assert "tini" in lines and "root-read-only" in lines and "tmp-writable" in lines
    done = project("run", "--rm", "-T", "train", "data=digits", "trainer.max_steps=2", check=True)
    assert "run dir:" in done.stdout  # and training is happy with it


def test_threads_follow_the_cpu_quota_without_a_libgomp_warning(project):
    out = subprocess.run(["docker", "run", "--rm", "--cpus", "1", "--user",
                          f"{os.getuid()}:{os.getgid()}", "-e", "TRAIN_ALLOW_ROOT=1", "-v",
                          f"{project.home / 'runs'}:/runs", "train:cpu", "data=digits",
                          "trainer.max_steps=2"], capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "CPU threads: 1 (the container's CPU quota, 1 CPUs" in out.stdout
    assert "OMP_NUM_THREADS" not in out.stderr  # libgomp's "Invalid value" on every start, before


def test_the_gpu_override_reaches_every_service_that_should_see_gpus(project):
    out = project("-f", "compose.yaml", "-f", "compose.gpu.yaml", "config", "--format", "json",
                  check=True)  # fmt: skip
    services = json.loads(out.stdout)["services"]
    for name in ("train", "train-doctor", "jupyter"):
        s = services[name]
        assert s["image"] == ("train:jupyter-cuda" if name == "jupyter" else "train:cuda")
        assert s["ipc"] == "host", name
        (device,) = s["deploy"]["resources"]["reservations"]["devices"]
        assert device["capabilities"] == ["gpu"] and device["driver"] == "nvidia"
        assert "shm_size" not in s, name  # (the private /dev/shm's size, beside ipc: host)
    assert services["train"]["build"]["target"] == "cuda"
    for name in ("train", "jupyter"):
        assert services[name]["build"]["dockerfile"] == "Dockerfile.cuda", name
    assert services["tensorboard"]["image"] == "train:tensorboard"  # needs no GPU


def test_the_readme_quick_start_works_for_a_non_root_user(project, tmp_path):
    """A fresh clone, used by a user who is not root, with the README's commands as written:
    the first run failed with Permission denied on ./runs, which Docker had made as root."""
    user = f"newuser{os.getpid() % 10000}"
    home = Path(f"/home/{user}")

    def as_user(command: str, timeout=1800):
        env = " ".join(f"'{k}={v}'" for k, v in ENV.items())
        return subprocess.run(["runuser", "-u", user, "--", "sh", "-c",
                               f"cd ~/train && env {env} {command}"], capture_output=True,
                              text=True, timeout=timeout)  # fmt: skip

    subprocess.run(["useradd", "-m", "-G", "docker", user], check=True, capture_output=True)
    try:
        subprocess.run(["git", "clone", "-q", str(ROOT), str(home / "train")], check=True)
        subprocess.run(["chown", "-R", f"{user}:{user}", str(home / "train")], check=True)
        for command in ("make build", "docker compose run --rm train data=digits",
                        "docker compose up -d tensorboard"):  # fmt: skip
            out = as_user(command)
            assert out.returncode == 0, (command, out.stdout[-2000:] + out.stderr[-2000:])
            assert "Permission denied" not in out.stderr and "runs as root" not in out.stderr
        uid = int(subprocess.run(["id", "-u", user], capture_output=True, text=True).stdout)
        assert list((home / "train" / "runs").rglob("metrics.json"))
        assert all(p.stat().st_uid == uid for p in (home / "train" / "runs").rglob("*"))
        assert f"UID={uid}" in (home / "train" / ".env").read_text()
    finally:
        as_user("docker compose down", timeout=120)
        subprocess.run(["userdel", "-r", "-f", user], capture_output=True)
