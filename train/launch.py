"""`python -m train.launch [torchrun's arguments] -m train [overrides]`: torchrun itself
(`torch.distributed.run`), ending with the ranks' 143 / 130 when it is stopped by SIGTERM or
SIGINT (`docker stop`, Ctrl-C, a scheduler), after they have saved: plain torchrun re-raises
the signal as a SignalException traceback and exits 1.
"""

import signal
import sys


def main() -> None:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.run import main as torchrun

    try:
        torchrun()
    except SignalException as e:
        name = signal.Signals(e.sigval).name
        print(f"torchrun: stopped by {name}; the ranks stopped at one step and rank 0 saved "
              "checkpoints/last.pt (resume= continues the run)", file=sys.stderr)  # fmt: skip
        sys.exit(128 + e.sigval)


if __name__ == "__main__":
    main()
