"""`python -m train` whose rank 1 raises at its first training step (tests/test_distributed.py):
what a crash on one rank does to a torchrun job."""

import os

from train import app
from train.fit import loop


def fail(*args, **kwargs):
    raise RuntimeError("rank 1 failed on purpose")


if __name__ == "__main__":
    if os.environ.get("RANK") == "1":
        loop.train_steps = fail
    app.main()
