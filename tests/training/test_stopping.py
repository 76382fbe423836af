"""Stop signals: which are caught, what a first and a second one do, and that handlers are given back."""

import os
import signal

import pytest

from brainmets.errors import BrainmetsError
from brainmets.stopping import EXIT_RESUME, StopSignals, stop_signals


def test_the_signals_caught():
    assert stop_signals() == (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
    assert stop_signals("usr2") == stop_signals("SIGUSR2") == (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)
    assert stop_signals("none") == stop_signals(None) == (signal.SIGTERM, signal.SIGINT)
    assert stop_signals("SIGTERM") == (signal.SIGTERM, signal.SIGINT)
    with pytest.raises(BrainmetsError, match="'SIGNOPE' is not a signal"):
        stop_signals("SIGNOPE")
    with pytest.raises(BrainmetsError, match="SIGKILL cannot be caught"):
        stop_signals("KILL")
    assert EXIT_RESUME == 75  # EX_TEMPFAIL: documented in `brainmets train --help` and docs/architecture.md


def test_first_signal_is_recorded_and_handlers_are_given_back():
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    with StopSignals([signal.SIGTERM, signal.SIGUSR1]) as signals:
        assert signals.received is None
        os.kill(os.getpid(), signal.SIGUSR1)
        assert signals.received == "SIGUSR1"
        os.kill(os.getpid(), signal.SIGTERM)  # already stopping: nothing more happens
        assert signals.received == "SIGUSR1"
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_second_ctrl_c_interrupts_at_once():
    with StopSignals([signal.SIGINT]) as signals:
        os.kill(os.getpid(), signal.SIGINT)
        assert signals.received == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)


def test_an_ignored_signal_stays_ignored():
    previous = signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    try:
        with StopSignals([signal.SIGUSR2]) as signals:
            assert signal.getsignal(signal.SIGUSR2) == signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGUSR2)
            assert signals.received is None
    finally:
        signal.signal(signal.SIGUSR2, previous)
