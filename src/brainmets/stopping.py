"""Stopping a long job cleanly on a signal, so that the next job resumes it.

A cluster ends a job at its time limit with SIGTERM (then SIGKILL after a
grace period) and can send an early warning ahead of it (sbatch
``--signal=USR1@300``); a person stops a local run with Ctrl-C (SIGINT).
:class:`StopSignals` turns each of these into a request that the job reads
between two units of work: the unit in progress finishes, the job writes its
resumable state and exits with :data:`EXIT_RESUME`.

A second Ctrl-C does not wait: it raises KeyboardInterrupt at once (the
last checkpoint written stays valid). A second SIGTERM or warning changes
nothing; the job is already stopping.

Handlers can only be installed from the main thread; elsewhere (a job run in
a worker thread) the signals keep their handlers and nothing is caught.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Iterable

from brainmets.errors import BrainmetsError

logger = logging.getLogger(__name__)

#: Exit status of a job stopped by a signal after saving its state: "not finished, run me again to
#: resume" (EX_TEMPFAIL of sysexits.h, which batch systems and shells read as a temporary failure).
EXIT_RESUME = 75

#: The early-warning signal caught unless another one is named (SLURM: ``sbatch --signal=USR1@<seconds>``).
DEFAULT_WARNING_SIGNAL = "SIGUSR1"

#: Always caught: the batch system's stop (time limit, scancel, preemption) and Ctrl-C.
ALWAYS_CAUGHT = ("SIGTERM", "SIGINT")


def signal_number(name: str | int, what: str = "signal") -> signal.Signals:
    """``SIGUSR1``, ``USR1``, ``usr1`` or ``10`` -> :class:`signal.Signals`, with a clear error otherwise."""
    text = str(name).strip()
    try:
        return signal.Signals(int(text)) if text.isdigit() else signal.Signals[
            text.upper() if text.upper().startswith("SIG") else f"SIG{text.upper()}"]
    except (KeyError, ValueError):
        raise BrainmetsError(
            f"{what} {name!r} is not a signal of this system; e.g. SIGUSR1, SIGUSR2 (see `kill -l`)"
        ) from None


def stop_signals(warning: str | int | None = DEFAULT_WARNING_SIGNAL) -> tuple[signal.Signals, ...]:
    """SIGTERM, SIGINT and the ``warning`` signal (``None``/``"none"``: no warning signal)."""
    signals = [signal_number(name) for name in ALWAYS_CAUGHT]
    if warning is not None and str(warning).lower() != "none":
        number = signal_number(warning, "warning signal")
        if number in (signal.SIGKILL, signal.SIGSTOP):
            raise BrainmetsError(f"warning signal {number.name} cannot be caught; use e.g. SIGUSR1")
        if number not in signals:
            signals.append(number)
    return tuple(signals)


class StopSignals:
    """Context manager: while inside, the given signals ask for a stop instead of ending the process.

    ``received`` is the name of the first signal caught (``None`` while none
    has come). Leaving the context restores the previous handlers; a signal
    the parent process set to be ignored (``SIG_IGN``) stays ignored.
    """

    def __init__(self, signals: Iterable[signal.Signals] = ()):
        self.signals = tuple(signals)
        self.received: str | None = None
        self._previous: dict[signal.Signals, object] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is not threading.main_thread():
            logger.debug("not in the main thread: %s keep their handlers",
                         ", ".join(s.name for s in self.signals))
            return self
        for number in self.signals:
            previous = signal.getsignal(number)
            if previous == signal.SIG_IGN:
                continue
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for number, previous in self._previous.items():
            # None: the previous handler was not installed from Python; the default is the best guess
            signal.signal(number, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}

    def _handle(self, number: int, frame: FrameType | None) -> None:
        # Runs in the main thread between two bytecodes: record and return, no I/O here.
        if self.received is None:
            self.received = signal.Signals(number).name
        elif number == signal.SIGINT:
            raise KeyboardInterrupt
