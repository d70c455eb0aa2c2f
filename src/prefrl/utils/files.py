"""One atomic writer for every file prefrl persists outside the store.

A file is written to a temporary name in the same directory, flushed and fsync'ed, then moved
over the old one with :func:`os.replace` (atomic on POSIX and Windows), and the directory is
fsync'ed so that the rename itself is durable. A run killed mid-write (SIGKILL, power loss)
leaves either the old file or the new one, never half of one, and at worst a stale
``.NAME.*.tmp`` file that :func:`remove_stale_tmp` cleans.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "remove_stale_tmp", "fsync_dir"]


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """fsync a directory so that renames inside it survive a crash (no-op where unsupported)."""
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


def atomic_write(
    path: str | os.PathLike[str],
    data: bytes | str | Callable[[Path], None],
    *,
    encoding: str = "utf-8",
) -> Path:
    """Write ``data`` to ``path`` atomically; return ``path``.

    Args:
        path: the destination; its parent directory is created if needed.
        data: bytes, text (encoded with ``encoding``), or a function that writes the content
            to the temporary path it is given (for writers that want a file name, such as
            ``torch.save`` or a video encoder).
        encoding: text encoding when ``data`` is a ``str``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        if callable(data):
            os.close(fd)
            data(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        else:
            raw = data.encode(encoding) if isinstance(data, str) else data
            with os.fdopen(fd, "wb") as f:
                f.write(raw)
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def remove_stale_tmp(directory: str | os.PathLike[str]) -> list[Path]:
    """Delete the ``.NAME.*.tmp`` files a killed :func:`atomic_write` left in ``directory``."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    stale = [p for p in directory.glob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
