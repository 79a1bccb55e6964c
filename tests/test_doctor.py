"""The doctor's checks find each first-run problem and say the fix; fetch fills the cache."""

import os

import pytest
import torch

from train import doctor, fetch
from train.system import health


@pytest.mark.parametrize(
    "cuda, needle, fix",
    [(None, "is a CPU-only build", "use the CUDA image"),
     ("12.8", "built for CUDA 12.8, but no NVIDIA driver is visible", "install the NVIDIA driver")],
)  # fmt: skip
def test_gpu_on_a_cpu_machine_explains_why(monkeypatch, cuda, needle, fix):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", cuda)
    monkeypatch.setattr(health, "driver_version", lambda: None)
    monkeypatch.delenv("NVIDIA_VISIBLE_DEVICES", raising=False)
    c = health.gpu()
    assert c.status == "warn" and needle in c.detail and fix in c.fix


def test_a_typo_or_a_bad_value_is_one_paragraph_exit_2(cli):
    done = cli("modle=cnn", module="train.doctor")
    assert done.returncode == 2 and "did you mean 'model'?" in done.stderr, done.stderr
    done = cli("trainer.max_epochs=many", module="train.doctor")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "'many' of type 'str' could not be converted to Integer" in done.stderr


@pytest.mark.parametrize(
    "cuda, driver, status, needle",
    [
        ("13.0", (535, 104, 5), "fail", "older than CUDA 13.0"),
        ("12.8", (535, 104, 5), "fail", "does not initialise"),  # driver new enough: another cause
        ("12.8", (470, 1, 0), "fail", "older than CUDA 12.8"),
    ],
)
def test_driver_older_than_the_wheels_cuda(monkeypatch, cuda, driver, status, needle):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", cuda)
    monkeypatch.setattr(health, "driver_version", lambda: driver)
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", "all")
    c = health.gpu()
    assert c.status == status and needle in c.detail and c.fix


def test_hidden_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", "void")
    assert "hides every GPU" in health.gpu().detail


def test_shared_memory_against_workers(monkeypatch):
    size = os.statvfs("/dev/shm").f_blocks * os.statvfs("/dev/shm").f_frsize
    assert health.shared_memory(0).status == "ok"
    too_many = size // health.SHM_PER_WORKER + 1
    c = health.shared_memory(too_many)
    assert c.status == "fail" and "shm_size" in c.fix


def test_unwritable_dir_names_the_path_and_uid(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    c = health.can_write("runs dir", blocker / "runs")
    assert (
        c.status == "fail"
        and str(blocker / "runs") in c.detail
        and f"uid {os.getuid()}" in c.detail
    )
    assert health.can_write("runs dir", tmp_path / "ok").status == "ok"


def test_doctor_cli_exit_code(tmp_path, capsys):
    assert doctor.main([f"paths.runs_dir={tmp_path}", f"paths.data_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "[OK  ] runs dir" in out and "GPU" in out and "/dev/shm" in out


def test_fetch_fills_the_cache(data_dir, tmp_path, capsys):
    import shutil

    root = tmp_path / "d"
    shutil.copytree(data_dir, root)
    fetch.main(["data=mnist", f"paths.data_dir={root}"])  # files present: nothing downloaded
    assert (root / "MNIST" / "tensors-train.pt").is_file() and "ready in" in capsys.readouterr().out
    fetch.main(["data=digits", f"paths.data_dir={root}"])
    assert (root / "digits" / "tensors.pt").is_file()


@pytest.mark.parametrize("argv, said", [
    (["trainer.max_epochs=many"], "trainer.max_epochs=many: Value 'many' of type 'str' could "
                                  "not be converted to Integer."),
    (["data=csv"], "these values are needed and not given: data.path, e.g. data.path=my.csv"),
])  # fmt: skip
def test_fetch_and_summary_refuse_a_bad_or_missing_value_in_one_paragraph(
    tmp_path, capsys, argv, said
):
    """A CSV's data.path left out was a traceback and exit 1 from both."""
    from train import summary
    from train.errors import UserError

    with pytest.raises(UserError) as e:
        fetch.main([*argv, f"paths.data_dir={tmp_path}"])
    assert str(e.value).startswith(said)
    with pytest.raises(SystemExit) as e:
        summary.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"error: {said}" in err and "Traceback" not in err
