"""The stop request: one request however many times a relay passes it on, and a second one,
asked for later, that stops at once."""

import signal
import time

from train import signals


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


def test_until_training_handlers_are_marked_so_after_training_replaces_only_ours():
    previous = {s: signal.getsignal(s) for s in signals.SIGNALS}
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
