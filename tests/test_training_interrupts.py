"""Ctrl+C in the train commands: the first asks to stop and keep the best, the second stops."""

from __future__ import annotations

import os
import signal

import pytest

from napari_mobilesam.training.interrupts import stop_on_ctrl_c


def test_first_ctrl_c_asks_to_stop_the_second_interrupts(capsys):
    previous = signal.getsignal(signal.SIGINT)
    with stop_on_ctrl_c() as should_stop:
        assert not should_stop()
        os.kill(os.getpid(), signal.SIGINT)
        assert should_stop()
        assert "best weights so far are kept" in capsys.readouterr().err
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is previous
