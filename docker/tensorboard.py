"""The TensorBoard image's entrypoint: TensorBoard on the container's port, and one line with
the address a person can open. TensorBoard's own line names the address it binds inside the
container (http://0.0.0.0:6006), which no browser opens; compose publishes the port on
127.0.0.1 (TENSORBOARD_URL says where)."""

import os
import signal
import sys

from tensorboard import program


def main() -> None:
    board = program.TensorBoard()
    board.configure(argv=[sys.argv[0], *sys.argv[1:]])
    inside = board.launch()
    url = os.environ.get("TENSORBOARD_URL") or inside
    if "//0.0.0.0:" in url:  # (TENSORBOARD_BIND=0.0.0.0: every address of this machine)
        url = url.replace("0.0.0.0", "127.0.0.1") + " (and this machine's address on your network)"
    print(f"TensorBoard {board.flags.logdir}: open {url}  (Ctrl-C stops it)", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})  # (for sigwait)
    main()
