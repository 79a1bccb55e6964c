"""Console progress: a bar on a terminal, a plain line every few seconds otherwise (CI,
`docker compose run -T`)."""

import logging
import sys
import time
from collections.abc import Iterable, Iterator

log = logging.getLogger("train")
LINE_SECONDS = 15  # without a terminal, a line this often (and the per-epoch summary)
KERNEL_BAR_BATCHES = 50  # in a notebook, a bar for epochs of at least this many batches


def _in_kernel() -> bool:
    """This process is a Jupyter kernel (a notebook's cell runs it)."""
    return "ipykernel" in sys.modules


def track(batches: Iterable, total: int, desc: str, mode: str) -> Iterator:
    """Yield from `batches`, showing progress; `mode` is auto, bar or lines. In a Jupyter
    kernel, auto is tqdm's notebook bar (a widget; text where ipywidgets is missing) for
    epochs long enough to watch; a course table's one-batch epochs get the epoch lines alone
    (a widget per epoch made a 1,000-epoch lab four times slower)."""
    if mode == "auto" and _in_kernel():
        if total >= KERNEL_BAR_BATCHES:
            from tqdm.auto import tqdm

            yield from tqdm(batches, total=total, desc=desc, leave=False)
        else:
            yield from batches
        return
    if mode == "bar" or (mode == "auto" and sys.stderr.isatty()):
        from tqdm import tqdm

        yield from tqdm(batches, total=total, desc=desc, leave=False, dynamic_ncols=True)
        return
    start = last = time.perf_counter()
    for i, item in enumerate(batches, 1):
        yield item
        if i % 64 == 0 and (now := time.perf_counter()) - last >= LINE_SECONDS:
            last = now
            log.info("%s %d/%d batches (%.0fs)", desc, i, total, now - start)
