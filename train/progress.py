"""Console progress: a bar on a terminal, a plain line every few seconds otherwise (CI,
`docker compose run -T`)."""

import logging
import sys
import time
from collections.abc import Iterable, Iterator

log = logging.getLogger("train")
LINE_SECONDS = 15  # without a terminal, a line this often (and the per-epoch summary)


def track(batches: Iterable, total: int, desc: str, mode: str) -> Iterator:
    """Yield from `batches`, showing progress; `mode` is auto, bar or lines."""
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
