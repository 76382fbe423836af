"""Run ``brainmets ARGS`` and SIGKILL it at a chosen point of a result write (fault injection).

    python kill_at.py rename PATTERN N -- ARGS...
        killed just before the N-th atomic rename onto a path containing PATTERN
        (the temporary file is complete, the final name not yet written: the
        worst moment for a writer that is not atomic);
    python kill_at.py gzip-write PATTERN N -- ARGS...
        killed in the middle of the N-th gzip stream written for a path
        containing PATTERN (after its header and first data blocks: a half-written file).

An external ``kill -9`` lands at a random moment, so a test could not say which
moment it tried; patching the two calls every result write goes through
(``os.replace`` in brainmets.io, ``gzip.GzipFile.write`` under nibabel) makes
the moment exact. The kill itself is a real SIGKILL: no handler, no cleanup.
"""

from __future__ import annotations

import gzip
import os
import signal
import sys


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    mode, pattern, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if sys.argv[4] != "--":
        raise SystemExit("usage: kill_at.py rename|gzip-write PATTERN N -- brainmets arguments")
    argv = sys.argv[5:]
    seen: list[object] = []

    if mode == "rename":
        real_replace = os.replace

        def replace(src, dst, *args, **kwargs):
            if pattern in str(dst):
                seen.append(dst)
                if len(seen) == nth:
                    _die()
            return real_replace(src, dst, *args, **kwargs)

        os.replace = replace
    elif mode == "gzip-write":
        real_write = gzip.GzipFile.write
        writes: dict[int, int] = {}

        def write(self, data):
            # nibabel hands GzipFile an open file object: the path is that object's name
            name = str(getattr(self, "name", "") or getattr(getattr(self, "fileobj", None), "name", ""))
            if pattern in name and ".part" in name:
                if self not in seen:
                    seen.append(self)
                writes[id(self)] = writes.get(id(self), 0) + 1
                # header, extension flag and the first data blocks are written: die half way
                if seen.index(self) == nth - 1 and writes[id(self)] == 6:
                    _die()
            return real_write(self, data)

        gzip.GzipFile.write = write
    else:
        raise SystemExit(f"unknown mode {mode!r}")

    from brainmets.cli import main as brainmets

    sys.exit(brainmets(argv))


if __name__ == "__main__":
    main()
