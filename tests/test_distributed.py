"""torchrun: 2 CPU processes (gloo), started as a user starts them. Rank 0 alone writes; its
checkpoint is a plain model's; 2 ranks x batch b train as 1 process x batch 2b does; a 2-rank
run resumes exactly; a rank that fails fails the job, named."""

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from compare import assert_same, outcome
from runs import run_dirs

from train.data.batches import bounds, part, shard_bounds
from train.models import course
from train.run import checkpoint

HERE = Path(__file__).resolve().parent
# 800 training examples: a multiple of every global batch below, so no example sits out.
MLP = ["data=synthetic", "model=mlp", "model.hidden=[32]", "trainer.log_every_n_steps=1"]


def files(run: Path) -> list[str]:
    return sorted(
        "events" if p.name.startswith("events.") else str(p.relative_to(run))
        for p in run.rglob("*")
        if p.is_file()
    )


def test_two_ranks_write_once_and_the_checkpoint_loads_into_a_plain_model(torchrun, cli, tmp_path):
    out = torchrun(*MLP, "trainer.max_epochs=2")
    assert out.returncode == 0, out.stderr[-3000:]
    (run,) = run_dirs(tmp_path / "ddp")
    # The same files as a single-process run of the same config: nothing per rank, nothing twice.
    assert cli(*MLP, "trainer.max_epochs=2").returncode == 0
    (single,) = run_dirs(tmp_path / "runs")
    assert files(run) == files(single)
    events = [p.name for p in run.glob("events.*")]
    assert len({name.split(".")[4] for name in events}) == 1, events  # one process wrote them
    log = (run / "train.log").read_text()
    assert log.count("epoch 1/2 |") == 1 and log.count("run dir:") == 1
    assert "torchrun: 2 ranks (gloo), data.batch_size=64 per rank, 128 in all per step" in log
    assert out.stdout.count("epoch 2/2 |") == 1  # one voice on the console
    assert json.loads((run / "run.json").read_text())["distributed"] == {
        "world_size": 2, "backend": "gloo"}  # fmt: skip

    blob = checkpoint.load(run / "checkpoints" / "last.pt")
    assert not any(k.startswith("module.") for k in blob["model"])
    fresh = course.MLP(in_shape=(1, 28, 28), num_outputs=10, hidden=[32])
    checkpoint.load_model(fresh, blob["model"], run)  # strict: every key, every shape
    assert blob["state"]["epoch"] == 2 and blob["state"]["step"] == 2 * 7  # 400 a rank: 6 x 64 + 16
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["timing"]["epochs"][1]["samples"] == 800  # both ranks


def test_two_ranks_at_batch_b_train_as_one_process_at_2b(torchrun, train_run, tmp_path):
    """Tolerance: the runs add the same float32 numbers in another order (DDP averages two
    half-batch gradients; one process averages the whole batch), so they agree to rounding:
    at most 6e-8 apart after these 25 SGD steps (measured). rtol 1e-5 + atol 1e-6 leaves room
    for that, and none for a wrong shard, order or averaging: summing the ranks' gradients
    instead of averaging them (the same as a halved learning rate) moves weights by ~1e-2."""
    args = [*MLP, "trainer.max_epochs=1", "optim=sgd", "optim.lr=0.1", "data.val_fraction=0.1",
            "trainer.score_train=true"]  # fmt: skip
    out = torchrun(*args, "data.batch_size=16")
    assert out.returncode == 0, out.stderr[-3000:]
    (ddp,) = run_dirs(tmp_path / "ddp")
    one = train_run(*args, "data.batch_size=32", runs_dir=tmp_path / "one")
    a = checkpoint.load(ddp / "checkpoints" / "last.pt")
    b = checkpoint.load(one / "checkpoints" / "last.pt")
    assert a["state"]["step"] == b["state"]["step"] == 25
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-5, atol=1e-6)
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (ddp, one))
    for split in ("train", "val", "test"):  # the ranks' summed metrics are the whole split's
        for name, value in mb[split].items():
            assert ma[split][name] == pytest.approx(value, rel=1e-4, abs=1e-6), (split, name)


def test_a_two_rank_run_resumes_exactly(torchrun, tmp_path):
    args = [*MLP, "model.dropout=0.2", "model.batch_norm=true", "optim=adam",
            "trainer.max_epochs=2"]  # fmt: skip
    assert torchrun(*args).returncode == 0
    (whole,) = run_dirs(tmp_path / "ddp")
    out = torchrun(*args, "trainer.max_steps=10")  # 7 steps an epoch: stops mid-epoch 2
    assert out.returncode == 0, out.stderr[-3000:]
    (run,) = [r for r in run_dirs(tmp_path / "ddp") if r != whole]
    assert checkpoint.load(run / "checkpoints" / "last.pt")["state"]["batch_in_epoch"] == 3
    out = torchrun(*args, f"resume={run}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resuming at step 10, batch 3 of epoch 2" in out.stdout  # (as the stop said it)
    assert_same(outcome(whole), outcome(run))


def test_a_failing_rank_fails_the_job_and_is_named(torchrun, tmp_path):
    out = torchrun(*MLP, "trainer.max_epochs=1", script=HERE / "rank_fails.py", timeout=180)
    assert out.returncode != 0
    report = out.stdout + out.stderr
    assert "ChildFailedError" in report and "rank      : 1 (local_rank: 1)" in report, report
    assert "rank 1 failed on purpose" in report


def test_a_sweep_under_torchrun_is_refused_before_any_work(torchrun, tmp_path):
    out = torchrun("-m", *MLP, "optim.lr=0.1,0.01")
    assert out.returncode != 0
    assert "error: a sweep (-m) cannot run under torchrun" in out.stderr
    assert not (tmp_path / "ddp").exists()


@pytest.mark.parametrize("n, b, world", [(800, 16, 2), (803, 16, 2), (100, 7, 3), (10, 4, 4)])
def test_shards_are_the_global_batches_split_between_ranks(n, b, world):
    shards = [shard_bounds(n, b, r, world) for r in range(world)]
    assert len({len(s) for s in shards}) == 1  # every rank takes as many steps
    used = n - n % world
    global_batches = [(s * world, e * world) for s, e in bounds(used // world, b)]
    for k, (s, e) in enumerate(global_batches):  # step k: the ranks' slices tile global batch k
        assert [shards[r][k] for r in range(world)] == [
            (s + r * (e - s) // world, s + (r + 1) * (e - s) // world) for r in range(world)
        ]
    assert shard_bounds(n, 2 * b, 0, 1) == bounds(n, 2 * b)  # one process: unchanged
    parts = [part(n, r, world) for r in range(world)]  # evaluation: each example exactly once
    assert parts[0][0] == 0 and parts[-1][1] == n
    assert all(parts[r][1] == parts[r + 1][0] for r in range(world - 1))


def test_ranks_and_sweep_jobs_spread_over_the_gpus(monkeypatch):
    from train.errors import UserError
    from train.system import device as devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: "a GPU")
    assert devices.choose("auto", 1, shared=False)[0] == torch.device("cuda", 1)  # local rank 1
    assert [devices.choose("cuda", job)[0].index for job in range(5)] == [0, 1, 0, 1, 0]
    assert devices.choose("auto")[0] == torch.device("cuda")  # one process: as before
    assert devices.choose("cpu", 1, shared=False)[0] == torch.device("cpu")
    with pytest.raises(UserError, match="local rank 2, but 2 CUDA device"):
        devices.choose("auto", 2, shared=False)
    with pytest.raises(UserError, match="trainer.device=cuda:0 pins every torchrun rank"):
        devices.choose("cuda:0", 1, shared=False)


def test_sigterm_to_torchrun_stops_every_rank_at_one_step_and_resume_finishes(tmp_path, torchrun):
    import signal
    import time

    slow = ["trainer.checkpoint_every_s=0", "data=synthetic", "data.num_samples=3000", "model=mlp",
            "model.hidden=[512,512]",
            "data.batch_size=16", "trainer.max_epochs=20"]  # fmt: skip
    runs = tmp_path / "ddp"
    child = torchrun(*slow, background=True)
    deadline = time.monotonic() + 120
    while not list(runs.rglob("checkpoints/last.pt")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)  # early in the second epoch
    child.send_signal(signal.SIGTERM)  # as docker stop does to the container's torchrun
    out, err = child.communicate(timeout=120)
    assert child.returncode != 0  # torchrun reports the stop
    assert out.count("stopped by SIGTERM at step") == 1, out + err  # rank 0 says it, once
    (run,) = run_dirs(runs)
    state = checkpoint.load(run / "checkpoints" / "last.pt")["state"]
    assert 1 <= state["epoch"] < 20, state  # saved where the ranks agreed to stop
    until = state["epoch"] + 1
    out = torchrun(*slow, f"resume={run}", f"trainer.max_epochs={until}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["epochs"] == until


@pytest.mark.slow
def test_two_ranks_with_the_defaults_train_as_well_as_one_process(torchrun, train_run, tmp_path):
    """With the defaults (Adam, early stopping) two ranks, whose global batch is twice one
    process's, land within 2 points of it on digits: they reached 46% against 72% before."""
    out = torchrun("data=digits")
    assert out.returncode == 0, out.stderr[-3000:]
    (ddp,) = run_dirs(tmp_path / "ddp")
    one = train_run("data=digits", runs_dir=tmp_path / "one", small=False)
    a, b = (json.loads((r / "metrics.json").read_text())["test"]["accuracy"] for r in (ddp, one))
    assert a >= b - 0.02 and b >= 0.95, (a, b)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_launchers_as_two_nodes_train_as_one_launcher_with_two_ranks(torchrun, tmp_path):
    """Multi-node torchrun, two "machines" on this one: --nnodes=2, one process each, a c10d
    rendezvous on loopback; one run dir, the same weights as one launcher with 2 ranks."""
    args = [*MLP, "trainer.max_epochs=2", "optim=sgd", "optim.lr=0.1"]
    assert torchrun(*args).returncode == 0
    port = _free_port()
    nodes = [["--nnodes=2", f"--node_rank={i}", f"--rdzv_endpoint=127.0.0.1:{port}",
              "--rdzv_backend=c10d", f"--rdzv_id=nodes-{port}"] for i in (0, 1)]  # fmt: skip
    procs = [torchrun(*args, launcher=n, runs="nodes", nproc=1, background=True) for n in nodes]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    (two_nodes,) = run_dirs(tmp_path / "nodes")
    (one_node,) = run_dirs(tmp_path / "ddp")
    assert_same(outcome(two_nodes), outcome(one_node))


def test_a_worker_killed_mid_run_is_restarted_and_continues_the_run_bitwise(torchrun, tmp_path):
    """torchrun --max-restarts=1: rank 0 (the one that writes) killed with SIGKILL mid-run;
    torchrun restarts both workers, which continue the same run dir from its last checkpoint
    with no resume= (TORCHELASTIC_RESTART_COUNT tells them), and end where an uninterrupted
    run ends, bit for bit."""
    args = [*MLP, "trainer.max_epochs=300", "trainer.patience=null", "optim=sgd",
            "optim.lr=0.05", "trainer.checkpoint_every_s=0"]  # fmt: skip
    proc = torchrun(*args, launcher=("--standalone", "--max-restarts=1"), runs="elastic",
                    background=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not list((tmp_path / "elastic").rglob("checkpoints/last.pt")):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    time.sleep(1)
    (run,) = run_dirs(tmp_path / "elastic")
    os.kill(int((run / ".lock").read_text()), signal.SIGKILL)  # rank 0 holds the run's lock
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert f"torchrun restart 1: continuing {run}" in out
    assert run_dirs(tmp_path / "elastic") == [run] and (run / "run-1.json").is_file()
    assert torchrun(*args).returncode == 0
    (straight,) = run_dirs(tmp_path / "ddp")
    assert_same(outcome(run), outcome(straight))
