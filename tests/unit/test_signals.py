"""The stop request: one request however many times a relay passes it on, and a second one,
asked for later, that stops at once."""

import hashlib
import os
import signal
import threading
import time

from train.system import signals


def test_a_signal_relayed_twice_is_one_request_and_a_later_one_stops_at_once(monkeypatch):
    """Ctrl-C in a terminal reaches the docker CLI and its compose plugin, and each passes it
    to the container: the second SIGINT, a moment after the first, killed the run mid-save."""
    now, raised = [100.0], []
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    monkeypatch.setattr(signal, "raise_signal", raised.append)
    with signals.StopRequest() as stop:
        handler = signal.getsignal(signal.SIGINT)
        handler(signal.SIGINT, None)
        now[0] += 0.05
        handler(signal.SIGINT, None)  # the relay's copy
        assert stop.signum == signal.SIGINT and raised == []
        now[0] += signals.SAME_REQUEST_S
        handler(signal.SIGTERM, None)  # asked again, later: stop now
        assert raised == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def busy_in_c(seconds: float) -> float:
    """Keep the main thread inside one C call (GIL released, as a torch op's or an fsync's) for
    about `seconds`: Python runs no signal handler until it returns. How long it took. (The
    pace is sampled over ~0.1 s and the caller asks for more than it needs: a 20 ms sample
    taken in a busy moment made a call asked for 1 s take 0.597 s once the moment passed.)"""
    start = time.monotonic()
    hashlib.pbkdf2_hmac("sha256", b"x", b"y", 100_000)
    per_round = (time.monotonic() - start) / 100_000
    start = time.monotonic()
    hashlib.pbkdf2_hmac("sha256", b"x", b"y", max(1, int(seconds / per_round)))
    return time.monotonic() - start


def test_a_copy_handled_late_is_still_the_same_request(monkeypatch):
    """The relay's copy arrives 20 ms after the first but its handler runs only once the main
    thread leaves a long C call: it is the same request, judged by when it arrived. Then a
    request made later, with the main thread free, stops at once."""
    monkeypatch.setattr(signals, "SAME_REQUEST_S", 0.3)
    raised = []
    monkeypatch.setattr(signal, "raise_signal", raised.append)
    pid = os.getpid()
    with signals.StopRequest() as stop:
        os.kill(pid, signal.SIGINT)  # (handled as os.kill returns)
        assert stop.signum == signal.SIGINT
        threading.Timer(0.02, os.kill, (pid, signal.SIGINT)).start()
        assert busy_in_c(1.5) >= 0.6  # the copy's handler runs here, 0.6 s and more late
        assert raised == []
        time.sleep(0.05)
        os.kill(pid, signal.SIGINT)  # asked again, 0.6 s and more after the first
        assert raised == [signal.SIGINT]
    signal.signal(signal.SIGINT, signal.default_int_handler)


def test_until_training_handlers_are_marked_so_after_training_replaces_only_ours():
    previous = {s: signal.getsignal(s) for s in signals.stop_signals()}
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signals.after_training()  # (a notebook's process: nothing of ours to replace)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        signals.until_training()
        first = signal.getsignal(signal.SIGTERM)
        signals.after_training()
        assert getattr(signal.getsignal(signal.SIGTERM), "exits", False)
        assert signal.getsignal(signal.SIGTERM) is not first
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
