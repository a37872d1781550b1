"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never half of one.

    write_atomic("report.json", text)                      # str (UTF-8) or bytes
    with atomic_path("weights.safetensors") as tmp:        # for writers that want a path of their own
        save_file(tensors, str(tmp))
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path``; when the block succeeds it replaces ``path``.

    The temporary file lives in the same folder so that the final rename is atomic (same file system), is
    flushed to disk first so that a crash cannot leave a renamed but empty file, and is removed if the
    block raises: ``path`` then keeps its old content (or stays absent).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")  # unique: concurrent writers never collide
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # gone after a successful replace; a partial write otherwise


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (bytes, or str as UTF-8) to ``path`` atomically; returns the path."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    with atomic_path(path) as tmp:
        with open(tmp, "xb") as f:
            f.write(data)
    return Path(path)
