"""Device choice over every accelerator torch knows (CUDA, Apple's MPS, Intel's XPU), and what
trainer.amp takes on each: with the accelerators mocked, as no such machine is here."""

import pytest
import torch

from train import build
from train.errors import UserError
from train.run import record
from train.system import device as devices


@pytest.fixture
def built_for(monkeypatch):
    """This torch as if built for `kind` (torch.accelerator), usable or not, with no CUDA."""

    def make(kind: str, usable: bool = True, count: int = 1):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        monkeypatch.setattr(torch.accelerator, "current_accelerator",
                            lambda check_available=False: torch.device(kind))  # fmt: skip
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: usable and kind == "mps")
        monkeypatch.setattr(torch.backends.mps, "get_name", lambda: "Apple M3")
        monkeypatch.setattr(torch.xpu, "is_available", lambda: usable and kind == "xpu")
        monkeypatch.setattr(torch.xpu, "device_count", lambda: count)
        monkeypatch.setattr(torch.xpu, "get_device_name", lambda i=0: f"Intel Arc {i}")

    return make


@pytest.mark.parametrize(
    "kind, said",
    [
        ("mps", "auto: Apple's MPS is available (Apple M3)"),
        ("xpu", "auto: Intel's XPU is available (Intel Arc 0)"),
    ],
)
def test_auto_takes_the_accelerator_torch_was_built_for(built_for, kind, said):
    built_for(kind)
    assert devices.choose("auto") == (torch.device(kind), said)


def test_cuda_comes_first_and_an_unusable_accelerator_falls_back_saying_why(built_for, monkeypatch):
    built_for("mps", usable=False)
    device, why = devices.choose("auto")
    assert device == torch.device("cpu") and why.startswith("auto: no CUDA device, falling back")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: "an H200")
    assert devices.choose("auto") == (torch.device("cuda"), "auto: CUDA is available (an H200)")


def test_asking_for_each_device_by_name(built_for):
    built_for("xpu", count=2)
    assert devices.choose("xpu:1") == (torch.device("xpu", 1), "requested (Intel Arc 1)")
    with pytest.raises(UserError, match=r"xpu:2 does not exist: 2 Intel's XPU device\(s\)"):
        devices.choose("xpu:2")
    with pytest.raises(UserError, match="mps was requested but Apple's MPS is not usable here "
                                        r"\(this torch .* is built for Intel's XPU\)"):  # fmt: skip
        devices.choose("mps")
    built_for("mps")
    assert devices.choose("mps") == (torch.device("mps"), "requested (Apple M3)")
    with pytest.raises(UserError, match="not a device; use one of auto, cpu, cuda, cuda:N, mps"):
        devices.choose("tpu")


@pytest.mark.parametrize("amp, kind, said", [
    ("fp16", "cpu", r"takes bf16 \(or off\). fp16 needs a CUDA or XPU device"),
    ("fp16", "mps", "is not for mps devices; the run is on mps, where trainer.amp takes bf16"),
])  # fmt: skip
def test_amp_a_device_cannot_do_is_one_paragraph(amp, kind, said):
    with pytest.raises(UserError, match=said):
        build._precision(amp, torch.device(kind))


def test_amp_checks_each_devices_bf16_units_and_scales_fp16_on_its_own_device(monkeypatch):
    monkeypatch.setattr(torch.xpu, "is_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.xpu, "get_device_name", lambda i=0: "Intel Arc A380")
    with pytest.raises(UserError, match=r"xpu device \(Intel Arc A380\) has no bf16 support"):
        build._precision("bf16", torch.device("xpu"))
    monkeypatch.setattr(torch.backends.mps, "is_macos_or_newer", lambda major, minor: False)
    with pytest.raises(UserError, match="bf16 on MPS needs macOS 14"):
        build._precision("bf16", torch.device("mps"))
    scaler, autocast = build._precision("fp16", torch.device("xpu"))
    assert scaler.is_enabled() and scaler._device == "xpu"
    scaler, autocast = build._precision("bf16", torch.device("cpu"))
    assert not scaler.is_enabled() and autocast().fast_dtype == torch.bfloat16


def test_the_record_names_every_accelerator_device(built_for):
    built_for("xpu", count=2)
    assert record.gpu_names() == ["Intel Arc 0", "Intel Arc 1"]
    built_for("mps")
    assert record.gpu_names() == ["Apple M3"]
    built_for("mps", usable=False)
    assert record.gpu_names() == []
