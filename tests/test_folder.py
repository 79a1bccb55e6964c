"""Users' image folders and files, written as image tools write them (8-bit 0..255, 16-bit,
transparency, palettes), and damaged files among them; real images nobody here made
(scikit-learn's digits saved as ordinary PNGs)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from train.data import FolderSplit, TensorSplit, folder, images, sets
from train.errors import UserError
from train.predict import predict_run

COMMON = dict(batch_size=16, eval_batch_size=64, val_fraction=0.1, test_fraction=0.2,
              split_seed=0, normalize=True)  # fmt: skip


def options(tmp_path, **kw):
    return {**dict(image_size=None, grayscale=None, background="white", skip_bad_files=False,
                   in_memory=None, num_workers=0, cache_dir=str(tmp_path / "cache")),
            **kw}  # fmt: skip


def build(root, tmp_path, **kw):
    return sets.image_folder(str(root), **options(tmp_path, **kw), **COMMON)


def digits_pngs(root: Path, count: int | None = None) -> Path:
    """scikit-learn's real 8x8 digits as an image tool saves them: 8-bit, 0..255."""
    bunch = load_digits()
    for i, (img, t) in enumerate(zip(bunch.images[:count], bunch.target[:count], strict=True)):
        (root / str(t)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(img * 255 / 16).astype(np.uint8)).save(root / str(t) / f"{i}.png")
    return root


def small_folder(root: Path, n=12, size=(10, 10), colour=False) -> Path:
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = (*size, 3) if colour else size
            base = 40 if c == "a" else 200
            Image.fromarray(rng.integers(base - 30, base + 30, shape).astype(np.uint8)).save(
                root / c / f"{i}.png")  # fmt: skip
    return root


def test_real_digit_pngs_train_a_cnn_with_defaults_near_its_best(tmp_path, train_run):
    """8x8 grayscale PNGs stay 1 channel and 8x8 (no RGB, no resize to 32x32), decoded into
    memory; a CNN with the defaults lands near the best the digits preset reaches (>= 97%)."""
    root = digits_pngs(tmp_path / "digits")
    run = train_run("data=image_folder", f"data.path={root}", "model=cnn", small=False)
    metrics = json.loads((run / "metrics.json").read_text())
    blob = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert blob["data"]["in_shape"] == [1, 8, 8] and blob["data"]["layout"]["resize"] is False
    assert metrics["test"]["accuracy"] >= 0.97, metrics["test"]


def test_every_unreadable_file_is_named_at_once_and_nothing_is_left(cli, tmp_path):
    root = small_folder(tmp_path / "pics")
    (root / "a" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    good = (root / "b" / "0.png").read_bytes()
    (root / "b" / "truncated.png").write_bytes(good[: len(good) // 2])
    out = cli("data=image_folder", f"data.path={root}", "model=cnn", "model.channels=[4]")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "2 of 26 image file(s) cannot be read" in out.stderr
    assert "corrupt.png" in out.stderr and "truncated.png" in out.stderr
    assert "data.skip_bad_files=true" in out.stderr and "Traceback" not in out.stderr
    assert not list((tmp_path / "runs").rglob("*.*")), "bad input left files behind"
    out = cli("data=image_folder", f"data.path={root}", "model=cnn", "model.channels=[4]",
              "data.skip_bad_files=true", "trainer.max_epochs=1")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "skipping 2 unreadable image file(s)" in out.stdout + out.stderr


def test_files_are_checked_once_and_rechecked_when_they_change(tmp_path, monkeypatch):
    root = small_folder(tmp_path / "pics")
    calls = []
    real = images.probe
    monkeypatch.setattr(images, "probe", lambda p, bg="white": calls.append(p) or real(p, bg))
    build(root, tmp_path)
    assert len(calls) == 24
    calls.clear()
    build(root, tmp_path)
    assert calls == []  # unchanged files: their earlier check stands
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "a" / "3.png")
    (root / "b" / "new.png").write_bytes((root / "b" / "1.png").read_bytes())
    build(root, tmp_path)
    assert sorted(p.name for p in calls) == ["3.png", "new.png"]


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    ramp = (np.arange(100).reshape(10, 10) * 650).astype(np.uint16)  # 0 .. 64,350
    path = tmp_path / "ramp16.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I;16")
    pixels = images.read(path, None, "white")[..., 0]
    assert pixels.shape == (10, 10) and pixels.max() == round(64350 * 255 / 65535)
    assert len(np.unique(pixels)) > 90  # clipping made every value above 255 one value


def test_content_drawn_in_the_alpha_channel_is_composited_onto_a_background(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)  # black everywhere; a square drawn in the alpha
    rgba[2:6, 2:6, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    white = images.read(tmp_path / "a.png", None, "white")
    assert white.shape == (8, 8, 1)  # no colour in it: grayscale
    assert white[0, 0, 0] == 255 and white[3, 3, 0] == 0
    ink = np.zeros((8, 8, 4), np.uint8)
    ink[..., :3], ink[2:6, 2:6, 3] = 255, 255  # white ink on transparency
    Image.fromarray(ink, "RGBA").save(tmp_path / "b.png")
    black = images.read(tmp_path / "b.png", None, "black")
    assert black[0, 0, 0] == 0 and black[3, 3, 0] == 255


def test_channels_and_size_come_from_the_images_unless_set(tmp_path, caplog):
    gray = build(small_folder(tmp_path / "gray"), tmp_path)
    assert gray.in_shape == (1, 10, 10) and gray.layout["resize"] is False
    colour = build(small_folder(tmp_path / "colour", colour=True), tmp_path)
    assert colour.in_shape == (3, 10, 10)
    forced = build(tmp_path / "gray", tmp_path, grayscale=False, image_size=[6, 8])
    assert forced.in_shape == (3, 6, 8) and forced.layout["resize"] is True
    mixed = small_folder(tmp_path / "mixed")
    Image.fromarray(np.zeros((20, 14), np.uint8)).save(mixed / "a" / "big.png")
    with caplog.at_level("INFO", logger="train"):
        d = build(mixed, tmp_path)
    assert d.in_shape == (1, 10, 10) and "resizing all to the most common, 10x10" in caplog.text


def test_in_memory_and_streamed_folders_give_the_same_batches(tmp_path):
    from train.data.batches import Batches, Normalizer, epoch_order

    root = small_folder(tmp_path / "pics", colour=True)
    mem, disk = build(root, tmp_path, in_memory=True), build(root, tmp_path, in_memory=False)
    assert isinstance(mem.train, TensorSplit) and isinstance(disk.train, FolderSplit)
    torch.testing.assert_close(mem.mean, disk.mean, rtol=1e-5, atol=1e-6)
    cpu = torch.device("cpu")
    order = epoch_order(len(mem.train), 0, 0)
    a = list(Batches(mem.train, 8, Normalizer(mem, cpu), cpu).ordered(order))
    b = list(Batches(disk.train, 8, Normalizer(mem, cpu), cpu).ordered(order))
    assert all(torch.equal(x, y) and torch.equal(u, v) for (x, u), (y, v) in zip(a, b, strict=True))


def test_bad_image_size_is_refused_before_any_work(tmp_path):
    with pytest.raises(UserError, match=r"data.image_size=\[0, 0\] must be \[height, width\]"):
        build(small_folder(tmp_path / "pics"), tmp_path, image_size=[0, 0])


def test_predict_reads_ordinary_pngs_of_digits_on_the_sets_own_scale(tmp_path, train_run):
    """A data=digits model (pixels 0..16) predicts ordinary 0..255 PNGs right: 20/30 before."""
    run = train_run("experiment=digits_mlp", "trainer.max_epochs=15")
    bunch = load_digits()
    picks = range(0, 1797, 60)  # 30 images, the model saw most in training
    pngs = tmp_path / "mine"
    pngs.mkdir()
    for i in picks:
        Image.fromarray(np.round(bunch.images[i] * 255 / 16).astype(np.uint8)).convert(
            "RGB").save(pngs / f"{i:04d}_{bunch.target[i]}.png")  # fmt: skip
    rows = predict_run(run, str(pngs))
    right = sum(Path(src).stem.split("_")[1] == pred for src, pred, _ in rows)
    assert right >= 28, rows


def test_folder_layout_is_what_predict_uses(tmp_path, train_run):
    """An image_folder model reads new files as training did: RGBA composited, resized."""
    root = small_folder(tmp_path / "pics", size=(12, 12))
    run = train_run("data=image_folder", f"data.path={root}", "model=cnn", "model.channels=[4]",
                    "data.image_size=[8,8]", "trainer.max_epochs=5")  # fmt: skip
    new = tmp_path / "new"
    new.mkdir()
    bright = np.full((30, 30, 4), 255, np.uint8)
    bright[..., :3] = 210
    Image.fromarray(bright, "RGBA").save(new / "bright.png")
    Image.fromarray(np.full((16, 16), 40, np.uint8)).save(new / "dark.png")
    rows = {Path(src).name: pred for src, pred, _ in predict_run(run, str(new))}
    assert rows == {"bright.png": "b", "dark.png": "a"}
    layout = torch.load(run / "checkpoints" / "best.pt", weights_only=True)["data"]["layout"]
    assert folder.Layout(**layout) == folder.Layout(1, 8, 8, resize=True, background="white")


# --- untrusted input, round 3: folders as users' machines leave them ----------------------------


def test_macos_appledouble_files_hidden_files_and_empty_class_folders_are_left_out_and_said(
    tmp_path, caplog
):
    """A folder copied from a Mac holds ._x.png AppleDouble files (not images) beside each
    picture: they stopped the whole run, with "<_io.BytesIO object at 0x...>" for a name."""
    root = small_folder(tmp_path / "pics")
    for f in list(root.rglob("*.png")):  # what macOS writes on a FAT/exFAT/network drive
        (f.parent / f"._{f.name}").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    (root / "a" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "empty").mkdir()
    (root / ".ipynb_checkpoints").mkdir()
    with caplog.at_level("INFO", logger="train"):
        data = build(root, tmp_path)
    assert data.class_names == ["a", "b"] and len(data.train) + len(data.val) + len(data.test) == 24
    assert f"left out 25 hidden file(s) under {root}" in caplog.text
    assert "left out 1 class folder(s) of" in caplog.text and "['empty']" in caplog.text


def test_a_class_too_small_to_split_is_named(tmp_path, caplog):
    root = small_folder(tmp_path / "pics")
    (root / "rare").mkdir()
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "rare" / "only.png")
    with caplog.at_level("WARNING", logger="train"):
        data = build(root, tmp_path)
    assert data.class_names == ["a", "b", "rare"]
    assert "fewer than 3 images, too few to appear in every split and to be scored: rare (1)" \
        in caplog.text  # fmt: skip


def test_a_test_folder_may_lack_a_class_but_not_add_one(tmp_path):
    root = tmp_path / "split"
    small_folder(root / "train")
    small_folder(root / "test", n=3)
    for f in (root / "test" / "b").iterdir():
        f.unlink()
    data = build(root, tmp_path)
    assert data.class_names == ["a", "b"] and set(data.test.y.tolist()) == {0}
    (root / "test" / "c").mkdir()
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "test" / "c" / "x.png")
    with pytest.raises(UserError, match=r"test has the class folder\(s\) \['c'\], which"):
        build(root, tmp_path)
