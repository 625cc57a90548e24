"""Writes that never leave half a file, for the data and training code and for the model caches that processes share,
and the digest of a file's bytes.

A flat module, as every module a saved model's code imports must be (transformers copies them beside it)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, read in blocks (a model's weights need not fit twice in memory)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def umask() -> int:
    """The process's umask: what mkstemp and mkdtemp, which make private files, do not apply."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, content: str | bytes, concurrent: bool = False) -> None:
    """Write (text as UTF-8) beside the final name, then rename: a reader, or a run killed meanwhile, sees the old file
    or the new one, never part of one.

    The temporary file is NAME.tmp, so a rerun overwrites what a killed run left (resumable jobs). With `concurrent`,
    for files that processes sharing a cache may write at once, each write gets a file of its own (mkstemp), with
    the permissions a plain write gives (the cache may be shared)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content.encode("utf-8") if isinstance(content, str) else content
    if not concurrent:
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_bytes(data)
        os.replace(temporary, path)
        return
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.chmod(temporary, 0o666 & ~umask())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


@contextlib.contextmanager
def folder_in_place(folder: str | os.PathLike) -> Iterator[Path]:
    """A folder to fill, made beside `folder` (`.NAME.partial-*`, with the umask's permissions: caches may be shared)
    and renamed to `folder` when the block ends; removed if it raises, so a failure leaves nothing named `folder`
    (and a kill leaves only the partial folder, which whoever owns `folder` may clear). An existing empty `folder`
    (the current directory, a mount point, a link to one, a folder with its own owner and mode) is kept: the partial
    folder is made inside it and its files moved up, a model's config.json last, so that it loads only when whole.
    Its files get the umask's permissions too (safetensors writes weights readable by their owner alone)."""
    folder = Path(os.path.realpath(folder))
    existing = folder.is_dir()
    work = Path(tempfile.mkdtemp(dir=folder if existing else folder.parent, prefix=f".{folder.name}.partial-"))
    os.chmod(work, 0o777 & ~umask())  # mkdtemp makes it private
    try:
        yield work
        mode = 0o666 & ~umask()
        for path in work.rglob("*"):
            if path.is_file() and not path.is_symlink():
                os.chmod(path, mode)
        if existing:
            for entry in sorted(work.iterdir(), key=lambda entry: entry.name == "config.json"):
                os.replace(entry, folder / entry.name)
        else:
            os.replace(work, folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def replace_folder(new: str | os.PathLike, folder: str | os.PathLike) -> None:
    """Put the finished folder `new` in the place of `folder`, an earlier version of it (a model saved again): the
    old one is renamed aside (`.NAME.old`) first and removed last. Removing it first left, after a kill during the
    removal, half a model under the final name; now a kill leaves `folder` whole, old or new, or for the instant
    between two renames absent, with both versions whole beside it."""
    new, folder = Path(new), Path(folder)
    old = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(old, ignore_errors=True)  # what a killed run left
    if folder.exists():
        os.replace(folder, old)
    os.replace(new, folder)
    shutil.rmtree(old, ignore_errors=True)


def clear_partials(folder: str | os.PathLike) -> None:
    """Remove what killed runs left while making `folder` or a file in it (`.NAME.partial-*` beside `folder` and in
    it). Only for whoever holds the lock under which `folder` is made: a partial may be another process's work."""
    folder = Path(os.path.realpath(folder))
    for stale in [*folder.parent.glob(f".{folder.name}.partial-*"), *folder.glob(".*.partial-*")]:
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


__all__ = ["clear_partials", "file_sha256", "folder_in_place", "replace_folder", "umask", "write_atomic"]
