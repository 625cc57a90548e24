"""Writes that never leave half a file, for the data and training code and for the model caches that processes share.

A flat module, as every module a saved model's code imports must be (transformers copies them beside it)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def umask() -> int:
    """The process's umask: what mkstemp and mkdtemp, which make private files, do not apply."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, content: str | bytes) -> None:
    """Write (text as UTF-8) to a file of its own beside the final name, then rename: a reader, a run killed meanwhile
    or another process writing the same file sees the old file or a new one, never part of one. The file gets the
    permissions a plain write would (caches may be shared)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(content.encode("utf-8") if isinstance(content, str) else content)
        os.chmod(temporary, 0o666 & ~umask())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


__all__ = ["umask", "write_atomic"]
