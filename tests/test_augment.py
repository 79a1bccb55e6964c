"""Augmentation on the training split: what flip_crop does to a known image, the same draws
for a global batch however many ranks share it, torchvision's policies seeded per image
without touching the run's random state, and bitwise reruns and resumes."""

import pytest
import torch
from compare import assert_same, outcome

from train.data import augment
from train.errors import UserError

IMAGES = ["data=synthetic", "data.shape=[3,12,12]", "data.num_samples=240", "model=cnn",
          "model.channels=[4]", "trainer.checkpoint_every_s=0", "trainer.max_epochs=2"]  # fmt: skip


def test_flip_crop_is_a_flip_and_a_crop_of_the_black_padded_image():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6)
    black = torch.tensor([-1.0, -2.0, -3.0]).reshape(3, 1, 1)
    out = augment.FlipCrop()(x, black, seed=5, part=(0, 2), size=2)
    g = torch.Generator().manual_seed(5)  # the same draws, made by hand
    flip = torch.rand(2, generator=g) < 0.5
    dy, dx = torch.randint(-4, 5, (2, 2), generator=g)
    for i in range(2):
        padded = torch.nn.functional.pad(x[i] - black, (4, 4, 4, 4)) + black
        crop = padded[:, 4 + dy[i] : 4 + dy[i] + 6, 4 + dx[i] : 4 + dx[i] + 6]
        assert torch.equal(out[i], crop.flip(-1) if flip[i] else crop), i


def test_a_global_batch_is_augmented_alike_however_many_ranks_share_it():
    x = torch.randn(8, 3, 10, 10)
    black = torch.zeros(3, 1, 1)
    whole = augment.FlipCrop()(x, black, 11, (0, 8), 8)
    parts = [augment.FlipCrop()(x[r * 2 : (r + 1) * 2], black, 11, (r * 2, (r + 1) * 2), 8)
             for r in range(4)]  # fmt: skip
    assert torch.equal(whole, torch.cat(parts))


def test_torchvisions_policies_draw_per_image_from_their_own_seed():
    x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    for name in ("trivialaugment", "randaugment"):
        policy = augment.Policy(name)
        state = torch.get_rng_state()
        a, b = policy(x, 3, 0), policy(x, 3, 0)
        assert torch.equal(a, b) and torch.equal(torch.get_rng_state(), state)
        assert not torch.equal(policy(x, 4, 0), a)  # another batch: other draws
        assert torch.equal(policy(x[2:], 3, 2), a[2:])  # an image's draw: its own place


@pytest.mark.parametrize("name", ["flip_crop", "trivialaugment"])
def test_augmented_runs_rerun_and_resume_bit_for_bit(tmp_path, train_run, name):
    args = [*IMAGES, f"data.augment={name}"]
    a = train_run(*args, runs_dir=tmp_path / "a")
    b = train_run(*args, runs_dir=tmp_path / "b")
    assert_same(outcome(a), outcome(b))
    plain = train_run(*IMAGES, runs_dir=tmp_path / "plain")
    assert not torch.equal(outcome(plain)[0]["head.5.weight"], outcome(a)[0]["head.5.weight"])
    half = train_run(*args, "trainer.max_steps=10", runs_dir=tmp_path / "c")  # mid-epoch 2
    resumed = train_run(*args, f"resume={half}", runs_dir=tmp_path / "c")
    assert_same(outcome(a), outcome(resumed))


def test_augmenting_a_table_is_refused(train_run):
    with pytest.raises(UserError, match="data.augment=flip_crop is for image data"):
        train_run("experiment=softmax_classification", "data.augment=flip_crop")
