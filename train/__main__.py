"""`python -m train` and the `train` command. The signal handlers go in first, before torch,
numpy or Hydra start loading: a signal at any moment of start-up is one line and 143/130.

The process ends with os._exit once the run is over and every file is written (checkpoints
and records are fsynced as they are saved; the TensorBoard writer is closed; logs flushed
here): the interpreter's own teardown of torch took 1.4 s more (docs/benchmarks.md), and a
signal landing in it killed the process with no line, its handlers already reset."""

import atexit
import os
import sys
import threading

from train.system import signals


def main() -> None:
    signals.until_training()
    from train.app import main as train

    try:
        train()
        code = 0
    except SystemExit as e:
        code = e.code
    os._exit(_finished(code))


def _finished(code) -> int:
    """What Python's exit does before it tears the interpreter down, done now, in its order:
    threads joined with their exit hooks (a joblib sweep's workers stop there), the atexit
    hooks (logging's flush and close among them), stdout and stderr flushed. The status."""
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    threading._shutdown()  # (the interpreter's own first step of exiting, as it calls it)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    return code or 0


if __name__ == "__main__":
    main()
