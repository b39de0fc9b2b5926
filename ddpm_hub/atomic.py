"""Writes that never leave a half-written file looking complete: temp name in the same folder, then rename.

Temp names start with "." and end in ".tmp", which `push_to_hub` never uploads.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; when the block ends without error it is renamed onto `path`
    (readers see the old file or the new one, never half of it), else it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically, fsynced before the rename."""
    with atomic_path(path) as tmp:
        with open(tmp, "x", encoding="utf-8") as f:  # plain open: the file gets the umask's mode, not 0600
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside folder `path` durable; a no-op where folders cannot be opened (Windows) or fsynced."""
    import logging

    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        logging.getLogger(__name__).debug("fsync of folder %s is not supported here; the rename is still atomic",
                                          path)
    finally:
        os.close(fd)
