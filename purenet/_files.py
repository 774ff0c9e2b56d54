"""Writing files so that nothing a user saved is ever lost or half-written."""

from __future__ import annotations

import contextlib
import os
import pathlib
import tempfile
from typing import BinaryIO, Iterator


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, *, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Write `path` all at once or not at all.

    Yields a binary file opened in a temporary file beside `path`; when the block ends without an
    error the file is flushed, fsynced, given permissions `mode` and moved onto `path` with
    `os.replace` (then the directory is fsynced, so the rename itself is durable). An error inside the
    block (a failed checksum, an interrupted transfer, a kill signal turned into an exception) removes
    the temporary file and leaves whatever was at `path` untouched. Creates missing parent directories."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: pathlib.Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
