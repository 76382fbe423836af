"""User-facing errors: the CLI prints these without a traceback and exits non-zero."""

from __future__ import annotations

from pathlib import Path


class BrainmetsError(Exception):
    """An error caused by input or configuration, with a message meant for the user."""


class CaseError(BrainmetsError):
    """A problem with one case's files: names the case, the file and what was expected."""

    def __init__(self, case: str, file: str | Path | None, problem: str, hint: str | None = None):
        self.case = case
        self.file = str(file) if file is not None else None
        self.problem = problem
        self.hint = hint
        msg = f"{case}: {problem}"
        if file is not None:
            msg += f" ({file})"
        if hint:
            msg += f"; {hint}"
        super().__init__(msg)

    def __reduce__(self):
        # The default rebuilds the error from its message alone, which this constructor
        # does not accept: without this, a CaseError raised in a worker process breaks the pool.
        return type(self), (self.case, self.file, self.problem, self.hint)
