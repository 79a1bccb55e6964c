"""The benchmark itself, in a reduced mode: every variant runs and the table and JSON are
well formed and consistent with each other. (Not the speed: docs/benchmarks.md has that.)"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.speed import table, targets

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # (the benchmark in its quick mode: processes, tens of seconds)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.speed", "--quick", "--samples", "600", "--batches", "64",
         "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=out.parent,
        env={**os.environ, "PYTHONPATH": str(ROOT)},  # (bench/ is beside train/, not installed)
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def test_quick_bench_runs_every_variant_for_both_models(quick):
    result, _ = quick
    assert result["samples"] == 600 and result["repeats"] == 1
    assert result["peak"]["gflops"] > 0 and result["peak"]["dtype"]
    assert [(r["model"], r["batch"]) for r in result["rows"]] == [("mlp", 64), ("cnn", 64)]
    for row in result["rows"]:
        speeds = row["samples_per_s"]
        assert set(speeds) == {"A", "A*", "B", "C"} and min(speeds.values()) > 0
        assert row["ratios"]["A/B"] == pytest.approx(speeds["A"] / speeds["B"])
        assert row["ratios"]["A/C"] == pytest.approx(speeds["A"] / speeds["C"])
        flops = row["flops_per_sample"]
        assert row["gflops"]["A"] == pytest.approx(speeds["A"] * flops / 1e9)
        assert 0 < row["val_fraction"] < 1 and 0 < row["startup_s"] < 60
        assert min(row["peak_rss_mb"].values()) > 100
    mlp, cnn = result["rows"]
    # torch's FlopCounterMode: forward 2x multiply-adds, backward 2x for weights, 2x for inputs
    # except the first layer's (its input needs no gradient)
    macs = 784 * 512 + 512 * 512 + 512 * 10
    assert mlp["flops_per_sample"] == 6 * macs - 2 * 784 * 512
    assert 60e6 < cnn["flops_per_sample"] < 80e6  # pytorch/examples' Net: ~72 MFLOP


def test_table_lists_each_row_and_each_target_with_its_figure(quick):
    result, stdout = quick
    text = table(result)
    assert text in stdout
    assert "| mlp | 64 |" in text and "| cnn | 64 |" in text
    checks = targets(result)
    assert len(checks) == 2 * 2 + 2  # A/B and start-up per row; mlp@64 A/C; cnn@64 A*/B
    for what, ok in checks:
        assert f"{'met' if ok else 'MISSED'}: {what}" in text
