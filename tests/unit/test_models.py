"""The models build from (in_shape, num_outputs), run forward, and refuse what cannot work."""

import pytest
import torch

from train.errors import UserError
from train.models.course import CNN, MLP, Linear, check_fits, logistic, softmax


@pytest.mark.parametrize("in_shape", [(3,), (1, 8, 8), (3, 32, 32)])
@pytest.mark.parametrize(
    "build",
    [
        lambda s, k: Linear(s, k),
        lambda s, k: MLP(s, k, hidden=[16, 8], activation="tanh", dropout=0.1, batch_norm=True),
        lambda s, k: MLP(s, k, hidden=[], activation="sigmoid"),
    ],
)
def test_flat_models_forward(in_shape, build):
    model = build(in_shape, 5)
    assert model(torch.randn(4, *in_shape)).shape == (4, 5)


@pytest.mark.parametrize("in_shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
@pytest.mark.parametrize("pool", ["max", "avg"])
def test_cnn_forward(in_shape, pool):
    model = CNN(in_shape, 10, channels=[4, 8], kernel_size=3, pool=pool, batch_norm=True, head=16)
    assert model(torch.randn(2, *in_shape)).shape == (2, 10)


def test_examples_cnn_is_the_pytorch_examples_mnist_net():
    """model=examples_cnn: conv 1->32, conv 32->64 (3x3, no padding), one 2x2 max pool, then
    9216->128->10; pytorch/examples' mnist/main.py Net has 1,199,882 parameters."""
    model = CNN((1, 28, 28), 10, channels=[32, 64], padding="valid", pool_every=2)
    assert sum(p.numel() for p in model.parameters()) == 1_199_882
    kinds = [type(m).__name__ for m in model.features]
    assert kinds == ["Conv2d", "ReLU", "Conv2d", "ReLU", "MaxPool2d"]
    assert model.head[2].in_features == 9216
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_mlp_layers_match_the_config():
    model = MLP((1, 28, 28), 10, hidden=[512, 512], activation="relu")
    widths = [m.out_features for m in model if isinstance(m, torch.nn.Linear)]
    assert widths == [512, 512, 10]
    assert sum(p.numel() for p in model.parameters()) == 784 * 512 + 512 + 512 * 512 + 512 + 5130


@pytest.mark.parametrize(
    "build, task, classes, ok",
    [
        (logistic, "classification", 2, True),
        (logistic, "classification", 10, False),
        (logistic, "regression", None, False),
        (softmax, "classification", 10, True),
        (softmax, "classification", 2, False),
        (softmax, "regression", None, False),
        (Linear, "regression", None, True),
        (Linear, "classification", 10, True),
    ],
)
def test_models_refuse_data_they_are_not_for(build, task, classes, ok):
    model = build((2,), 1)
    if ok:
        check_fits(model, task, classes)
    else:
        with pytest.raises(UserError, match="Use model="):
            check_fits(model, task, classes)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: CNN((3,), 2, channels=[4]), "needs image data"),
        (lambda: CNN((1, 8, 8), 2, channels=[4, 4, 4, 4]), "shrinks"),
        (lambda: CNN((1, 4, 4), 2, channels=[4, 4], padding="valid", pool_every=2), "shrinks"),
        (lambda: CNN((1, 8, 8), 2, channels=[4], pool_every=0), "pool_every=0"),
        (lambda: CNN((1, 8, 8), 2, channels=[4], padding="full"), "'same', 'valid'"),
        (lambda: MLP((3,), 2, hidden=[0]), "at least 1"),
        (lambda: MLP((3,), 2, hidden=[4], activation="gelu"), "relu"),
        (lambda: MLP((3,), 2, hidden=[4], dropout=1.0), r"\[0, 1\)"),
    ],
)
def test_bad_model_options_are_named(make, match):
    with pytest.raises(UserError, match=match):
        make()
