"""Using what was trained: predict on files a user brings, export to ONNX/TorchScript with a
parity check, and the model summary; each with its errors."""

import json

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from conftest import train_in_process, write_class_table
from hydra.utils import instantiate
from PIL import Image
from runs import events

from train import export
from train.data.batches import Normalizer
from train.errors import UserError
from train.models import layers
from train.predict import predict_run
from train.trained import load

SHORT = ["trainer.max_epochs=2", "optim=adam", "optim.lr=0.01"]
FAMILIES = {
    "linear": ["experiment=linear_regression"],
    "logistic": ["experiment=logistic_regression"],
    "softmax": ["experiment=softmax_classification"],
    "mlp": ["data=digits", "model=mlp"],
    "cnn": ["data=digits", "model=cnn", "model.channels=[4]"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
    """One short run per model family (module-wide: training is the slow part)."""
    root = tmp_path_factory.mktemp("runs")
    return {
        name: train_in_process(root, data_dir, [*args, *SHORT]) for name, args in FAMILIES.items()
    }


def test_predict_on_pngs_matches_evaluating_the_same_tensors(runs, tmp_path):
    """Ordinary 8-bit PNGs (0..255, as an image tool writes them) map onto the digits set's
    0..16 scale: predict gives what evaluating those very pixels gives."""
    run = runs["mlp"]
    blob = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    data = instantiate(blob["config"]["data"])
    png = (data.test.x[:20].double() * 255 / 16).round().to(torch.uint8)  # 0..16 -> 0..255
    for i, img in enumerate(png):
        Image.fromarray(img[0].numpy()).save(tmp_path / f"{i:02d}.png")
    rows = predict_run(run, str(tmp_path), out=tmp_path / "out.csv")

    trained = load(run)
    x = png.float() * 16 / 255  # the same pixels on the set's own scale
    with torch.inference_mode():
        out = trained.model(Normalizer(data, torch.device("cpu"))(x))
    want = [data.class_names[c] for c in out.argmax(1).tolist()]
    assert [r[1] for r in rows] == want
    assert [r[0] for r in rows] == [str(tmp_path / f"{i:02d}.png") for i in range(20)]
    probs = torch.tensor([r[2] for r in rows])
    assert torch.allclose(probs, out.softmax(1).amax(1), atol=1e-6)
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert lines[0] == "input,prediction,probability" and len(lines) == 21


def test_predict_on_a_csv_matches_the_training_time_test_score(tmp_path, train_run):
    write_class_table(tmp_path / "table.csv", 120, spread=0.8)
    run = train_run("data=csv", f"data.path={tmp_path / 'table.csv'}", "data.target=label",
                    "data.test_fraction=0.3", "model=softmax", *SHORT)  # fmt: skip
    trained = load(run)
    data = instantiate(trained.config["data"])
    # the test rows, columns shuffled and no target: as a user would bring them
    x, y = data.test.x.numpy(), data.test.y.tolist()
    rows = ["f3,f1,f2"] + [f"{r[2]!r},{r[0]!r},{r[1]!r}" for r in x.tolist()]
    (tmp_path / "new.csv").write_text("\n".join(rows) + "\n")
    predicted = [r[1] for r in predict_run(run, str(tmp_path / "new.csv"))]
    accuracy = np.mean([p == data.class_names[t] for p, t in zip(predicted, y, strict=True)])
    logged = json.loads((run / "metrics.json").read_text())["test"]["accuracy"]
    assert accuracy == pytest.approx(logged, abs=1e-12)

    (tmp_path / "missing.csv").write_text("f1,f2\n1,2\n")
    with pytest.raises(UserError, match=r"missing \['f3'\]"):
        predict_run(run, str(tmp_path / "missing.csv"))
    (tmp_path / "extra.csv").write_text("f1,f2,f3,label\n1,2,3,a\n")
    with pytest.raises(UserError, match=r"extra \['label'\] \(drop them, and the target"):
        predict_run(run, str(tmp_path / "extra.csv"))


def test_predict_errors_name_the_problem(runs, tmp_path):
    run = runs["mlp"]
    (tmp_path / "bad.png").write_bytes(b"not an image")
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(tmp_path / "big.png")
    with pytest.raises(UserError, match=r"none of the 2 input file\(s\).*8x8 pixels") as e:
        predict_run(run, str(tmp_path))
    assert e.value.code == 2
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "ok.png")
    assert [r[0] for r in predict_run(run, str(tmp_path / "*.png"))] == [str(tmp_path / "ok.png")]
    with pytest.raises(UserError, match="matches no image file"):
        predict_run(run, str(tmp_path / "nothing-*.jpg"))
    with pytest.raises(UserError, match="has no best checkpoint"):
        predict_run(tmp_path, str(tmp_path))
    (tmp_path / "taken.csv").write_text("mine\n")
    with pytest.raises(UserError, match="already exists"):
        predict_run(run, str(tmp_path / "ok.png"), out=tmp_path / "taken.csv")
    assert (tmp_path / "taken.csv").read_text() == "mine\n"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_onnx_export_agrees_with_pytorch_for_every_model_family(runs, family):
    path = export.export_run(runs[family], "onnx")
    assert path == runs[family] / "checkpoints" / "model.onnx"
    trained = load(runs[family])
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["train.mean"]) == trained.meta.mean
    assert json.loads(meta["train.class_names"]) == trained.meta.class_names
    # a batch size the export never saw: the batch dimension is dynamic
    x = torch.randn(7, *trained.meta.in_shape)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
    with torch.inference_mode():
        want = trained.model(x)
    torch.testing.assert_close(got, want, rtol=export.RTOL, atol=export.ATOL)
    assert export.export_run(runs[family], "onnx").name == "model-1.onnx"  # never overwrites


def test_torchscript_export_loads_and_agrees(runs):
    path = export.export_run(runs["cnn"], "torchscript")
    extra = {"train.json": ""}
    loaded = torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra["train.json"])["train.task"] == '"classification"'
    x = torch.randn(3, 1, 8, 8)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), load(runs["cnn"]).model(x))


def test_export_refuses_a_disagreeing_model_and_bad_formats(runs, monkeypatch):
    monkeypatch.setattr(export, "_run_onnx", lambda path, x: load(runs["mlp"]).model(x) + 0.5)
    before = sorted(p.name for p in (runs["mlp"] / "checkpoints").iterdir())
    with pytest.raises(UserError, match=r"differs from PyTorch by up to 0\.5.*was not written"):
        export.export_run(runs["mlp"], "onnx")
    assert sorted(p.name for p in (runs["mlp"] / "checkpoints").iterdir()) == before
    with pytest.raises(UserError, match=r"format=tflite is not supported.*'onnx', 'torchscript'"):
        export.export_run(runs["mlp"], "tflite")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_summary_counts_every_parameter_and_goes_into_the_run(runs, family):
    trained = load(runs[family])
    text = layers.table(trained.model, trained.meta.in_shape)
    total = sum(p.numel() for p in trained.model.parameters())
    assert f"Total params: {total:,}" in text and f"Trainable params: {total:,}" in text
    lines = text.splitlines()
    rules = [i for i, ln in enumerate(lines) if set(ln) == {"-"}]
    assert len(rules) == 3  # above and below the header, below the layers
    layer_params = [int(ln.split()[-1].replace(",", "")) for ln in lines[rules[1] + 1 : rules[2]]]
    assert sum(layer_params) == total  # every parameter sits in one listed layer
    assert (runs[family] / "summary.txt").read_text().strip() == text
    acc = events(runs[family])
    assert "viz/model summary/text_summary" in acc.Tags()["tensors"]
    assert acc.Tags()["graph"], "no model graph in TensorBoard"


def test_summary_command_prints_the_table(cli):
    out = cli("model=examples_cnn", "data=digits", module="train.summary")
    assert out.returncode == 0, out.stderr
    assert "Conv2d" in out.stdout and "Total params:" in out.stdout
    out = cli("model=nope", module="train.summary")
    assert out.returncode == 2 and "Could not find 'model/nope'" in out.stderr
