"""Console progress: a bar on a terminal, plain periodic lines otherwise."""

import logging

from train.fit import progress


def test_bar_mode_draws_a_bar_and_yields_everything(capsys):
    assert list(progress.track(range(7), 7, "epoch 1/1", "bar")) == list(range(7))
    assert "epoch 1/1" in capsys.readouterr().err


def test_lines_mode_writes_plain_lines(monkeypatch, caplog):
    monkeypatch.setattr(progress, "LINE_SECONDS", 0)
    with caplog.at_level(logging.INFO, logger="train"):
        assert len(list(progress.track(range(200), 200, "epoch 2/3", "lines"))) == 200
    lines = [r.getMessage() for r in caplog.records]
    assert lines and lines[0].startswith("epoch 2/3 64/200 batches")
    assert "\r" not in "".join(lines)


def test_auto_without_a_terminal_draws_no_bar(capsys):
    list(progress.track(range(5), 5, "epoch 1/1", "auto"))  # pytest's stderr is not a terminal
    assert "it/s" not in capsys.readouterr().err


def test_in_a_notebook_long_epochs_get_a_bar_and_a_tables_tiny_ones_none(monkeypatch, capsys):
    """A widget per epoch made a 1,000-epoch lab four times slower in a kernel."""
    monkeypatch.setattr(progress, "_in_kernel", lambda: True)
    assert list(progress.track(range(3), 3, "epoch 1/1000", "auto")) == [0, 1, 2]
    assert capsys.readouterr().err == ""
    assert len(list(progress.track(range(60), 60, "epoch 1/5", "auto"))) == 60
    assert "epoch 1/5" in capsys.readouterr().err  # (tqdm.auto: text where no widget can draw)
