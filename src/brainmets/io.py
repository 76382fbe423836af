"""Atomic file writes and table/JSON helpers.

Every result file is written to a temporary name in the same directory and
renamed into place, so a killed job never leaves a half-written file under
the final name.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from brainmets.errors import BrainmetsError


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    The temporary file keeps ``path``'s suffixes (e.g. ``.nii.gz``) so that
    libraries choosing a format by extension still work. On error the
    temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BrainmetsError(
            f"cannot create output directory {path.parent}: {exc.strerror}{_advice(exc.errno, path)}"
        ) from exc
    suffix = suffix if suffix is not None else "".join(path.suffixes)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + suffix, dir=path.parent)
    except OSError as exc:
        raise BrainmetsError(f"cannot write to {path.parent}: {exc.strerror}{_advice(exc.errno, path)}") from exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _fsync(tmp_path)
        # mkstemp creates 0600 files; give results the permissions a plain open() would.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except BaseException as exc:
        # Some writers report a full disk without saying so (torch.save: "RuntimeError: [enforce
        # fail at inline_container.cc] unexpected pos"; numpy's tofile: an OSError without errno,
        # "N requested and M written"); ask the file system before the temporary file gives its
        # space back.
        unexplained = isinstance(exc, Exception) and not isinstance(exc, BrainmetsError) and (
            not isinstance(exc, OSError) or exc.errno is None)
        full = unexplained and _disk_full(tmp_path)
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if isinstance(exc, OSError) and not full:
            raise BrainmetsError(f"could not write {path}: {exc.strerror or exc}{_advice(exc.errno, path)}") from exc
        if full:
            raise BrainmetsError(
                f"could not write {path}: no space left on device ({type(exc).__name__}: {exc})"
                f"{_advice(errno.ENOSPC, path)}"
            ) from exc
        raise


#: A failed write is put down to a full file system when less than this is free (bytes) ...
_FULL_BELOW = 1 << 20
#: ... and less than this fraction of the file system (small file systems, e.g. a tmpfs).
_FULL_FRACTION = 0.05


def _disk_full(path: Path) -> bool:
    try:
        stat = os.statvfs(path.parent)
    except OSError:
        return False
    free = stat.f_bavail * stat.f_frsize
    return free < min(_FULL_BELOW, _FULL_FRACTION * stat.f_blocks * stat.f_frsize)


def _advice(code: int | None, path: Path) -> str:
    """What to do about a failed write, for the errors a user can fix."""
    if code in (errno.ENOSPC, errno.EDQUOT):
        return (f"; the file system holding {path.parent} is full: "
                "free space (or write the results elsewhere) and run again")
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"; {path.parent} is not writable: make it writable or write the results elsewhere"
    return ""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise BrainmetsError(f"file not found: {path}") from exc
    except json.JSONDecodeError as exc:
        raise BrainmetsError(f"{path} is not valid JSON: {exc}") from exc


def _json_default(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _sep(path: Path) -> str:
    return "," if path.suffix == ".csv" else "\t"


def write_table(df: "pandas.DataFrame", path: str | Path) -> None:  # noqa: F821
    """Write a DataFrame as TSV (or CSV for a ``.csv`` path), atomically, without index."""
    path = Path(path)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep=_sep(path), index=False)


def read_table(path: str | Path, what: str = "table") -> "pandas.DataFrame":  # noqa: F821
    """Read a TSV/CSV table written by :func:`write_table`, with a clear error if absent."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise BrainmetsError(f"{what} not found: {path}")
    try:
        return pd.read_csv(path, sep=_sep(path))
    except Exception as exc:  # pandas raises several types for malformed files
        raise BrainmetsError(f"cannot read {what} {path}: {exc}") from exc
