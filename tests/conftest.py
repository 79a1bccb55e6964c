"""Shared test fixtures: tiny data written in the real on-disk formats, and two ways to train:
in-process through the composed config (fast), and as a user does (`python -m train`).

The tiers: tests/unit/ (no training run, no process started), the in-process integration
tests beside it (both: `make test`), and `slow`, which every test that starts processes joins
(those using the `cli` or `torchrun` fixtures automatically; others are marked by hand):
`make test-slow`. CI runs every tier."""

import os

# One MKL code path on every x86 CPU (MKL's conditional numerical reproducibility), set before
# torch first calls MKL, and inherited by every process a test starts: with MKL's default, an
# AVX-512 machine rounds the course's labs differently, so golden weights and figures tuned on
# one CI machine failed on another. Users get the same switch (docs/guarantees.md).
os.environ.setdefault("MKL_CBWR", "COMPATIBLE")
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import open_dict

from bench.speed import write_idx  # (MNIST's file format: the benchmark writes it too)
from train import app, config
from train.errors import UserError
from train.run.claims import Claims

ROOT = Path(__file__).resolve().parent.parent


def learnable_images(n: int, shape: tuple, classes: int, seed: int):
    """uint8 images whose class is visible: one bright block per class, plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.integers(0, 60, (n, *shape)).astype(np.uint8)
    h = shape[-2] // classes or 1
    for i, c in enumerate(y):
        x[i, ..., c * h : (c + 1) * h, :] = 230
    return x, y


def write_class_table(path: Path, n: int, spread: float) -> None:
    """A CSV as a user brings one: features f1..f3 around their class (a, b or c), then label."""
    rng = np.random.default_rng(0)
    rows = ["f1,f2,f3,label"]
    for _ in range(n):
        c = int(rng.integers(3))
        f = rng.normal(c, spread, 3)
        rows.append(f"{f[0]:.3f},{f[1]:.3f},{f[2]:.3f},{'abc'[c]}")
    path.write_text("\n".join(rows) + "\n")


def write_mnist_like(root: Path, folder: str, n_train=300, n_test=100) -> None:
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        x, y = learnable_images(n, (28, 28), 10, seed)
        write_idx(root / folder / "raw" / f"{prefix}-images-idx3-ubyte", x)
        write_idx(root / folder / "raw" / f"{prefix}-labels-idx1-ubyte", y)


def write_cifar_like(root: Path, n_per_batch=60, n_test=60) -> None:
    """CIFAR-10's python layout: pickled batches of (N, 3072) rows, channel-major."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    names = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names}, f)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        x, y = learnable_images(n_test if name == "test_batch" else n_per_batch, (3, 32, 32), 10, i)
        with open(d / name, "wb") as f:
            pickle.dump({"data": x.reshape(len(x), -1), "labels": y.tolist()}, f)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A data dir with MNIST, Fashion-MNIST and CIFAR-10 in torchvision's real file formats."""
    root = tmp_path_factory.mktemp("data")
    write_mnist_like(root, "MNIST")
    write_mnist_like(root, "FashionMNIST")
    write_cifar_like(root)
    return root


@pytest.fixture(autouse=True)
def _cifar_checksums(monkeypatch):
    """torchvision checks CIFAR-10 files against the real ones' MD5s; ours are made up."""
    from torchvision.datasets import cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)


SMALL = ["trainer.progress=lines", "trainer.max_epochs=1", "trainer.num_sample_images=8"]


def compose_config(runs_dir: Path, data_dir: Path, overrides, small: bool = True):
    return config.compose(
        [f"paths.runs_dir={runs_dir}", f"paths.data_dir={data_dir}",
         *(SMALL if small else ["trainer.progress=lines"]), *overrides],
        hydra=True,
    )  # fmt: skip


def train_in_process(runs_dir: Path, data_dir: Path, overrides, small: bool = True,
                     edit=None) -> Path:  # fmt: skip
    """Train from the real composed config, in this process; returns the run dir. `small`:
    one epoch (the default for tests); false: the config's own defaults, as a user runs it.
    `edit(cfg)` changes the composed config first (what no override can reach)."""
    claims = Claims().register()  # (this run's, as each invocation of the command has its own)
    try:
        cfg = compose_config(runs_dir, data_dir, overrides, small)
        if edit is not None:
            with open_dict(cfg):
                edit(cfg)
        return app.train_composed(cfg, claims)[0]
    except UserError:
        claims.discard_unstarted()  # (what the entrypoint does on bad input)
        raise


@pytest.fixture
def train_run(tmp_path, data_dir):
    """Train in-process from the real composed config; returns the run dir."""

    def run(*overrides, runs_dir: Path | None = None, small: bool = True, edit=None) -> Path:
        return train_in_process(runs_dir or tmp_path / "runs", data_dir, overrides, small, edit)

    return run


def trained_once(tmp_path_factory, data_dir, *overrides):
    """A fixture's body: train `overrides` once (per module, as the fixture's scope says) and
    give each test its own copy of the runs dir (`copy_of`), which it may change freely."""
    root = tmp_path_factory.mktemp("trained") / "runs"
    return train_in_process(root, data_dir, overrides, small=True)


def copy_of(run: Path, tmp_path: Path) -> Path:
    """`run` copied into tmp_path/runs at the same place relative to its runs dir."""
    import shutil

    runs = run.parent.parent
    target = tmp_path / "runs" / run.relative_to(runs)
    shutil.copytree(run, target)
    return target


@pytest.fixture
def cli(tmp_path, data_dir):
    """Run `python -m <module> args...` as a user would, in tmp_path; the CompletedProcess."""

    def run(*args, flags=(), module="train", timeout=300, env=None):
        defaults = (
            [f"paths.runs_dir={tmp_path / 'runs'}", f"paths.data_dir={data_dir}"]
            if module == "train"
            else []
        )
        return subprocess.run(
            [sys.executable, "-m", module, *flags, *defaults, *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )

    return run


@pytest.fixture
def torchrun(tmp_path, data_dir):
    """`torchrun --standalone --nproc_per_node=2 -m train <args>` in tmp_path, into tmp_path/ddp:
    its CompletedProcess, or (`background=True`) the running Popen."""

    def run(*args, script=None, timeout=300, background=False, launcher=("--standalone",),
            runs="ddp", nproc=2):  # fmt: skip
        target = [str(script)] if script is not None else ["-m", "train"]
        cmd = [sys.executable, "-m", "torch.distributed.run", *launcher,
               f"--nproc_per_node={nproc}", *target, f"paths.runs_dir={tmp_path / runs}",
               f"paths.data_dir={data_dir}", "trainer.progress=lines", *args]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1"}  # (torchrun's default; said to quieten it)
        if background:
            return subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
        return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True,
                              timeout=timeout, env=env)  # fmt: skip

    return run


@pytest.hookimpl(tryfirst=True)  # (before -m selects by marker)
def pytest_collection_modifyitems(items):
    """Tests that start processes (`python -m ...`, torchrun) are the slow tier's."""
    for item in items:
        if {"cli", "torchrun"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
