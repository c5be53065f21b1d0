"""Writing key material and certificates so that no reader ever sees half a file and no
other user ever sees a private key.

A file is written beside its destination under a temporary name created with the final
mode (0600 for secrets), flushed to disk, then renamed over the destination: rename is
atomic on POSIX, so a sidecar reloading its certificate reads the old file or the new one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

PRIVATE = 0o600
PUBLIC = 0o644


def write_file(path: str | os.PathLike, data: bytes, *, mode: int = PUBLIC) -> Path:
    """Atomically replace `path` with `data`, created with `mode`. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)  # mkstemp already creates 0600; make public files readable
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def write_private(path: str | os.PathLike, data: bytes) -> Path:
    """`write_file` with mode 0600: for private keys and tokens."""
    return write_file(path, data, mode=PRIVATE)

