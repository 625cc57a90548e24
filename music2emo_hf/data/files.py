"""File helpers shared by the data and training code: audio lookups, and writes that never leave half a file."""

from __future__ import annotations

import os
from pathlib import Path

from ..audio import AUDIO_EXTENSIONS


def find_audio(folder: Path, name: str) -> str | None:
    """Absolute path of `name` in `folder` (a file name, or a bare stem taken as mp3), else of the same stem with
    another audio extension (a converted copy); None when the download lacks it, so the track is kept and reported."""
    stem = Path(name).stem if Path(name).suffix.lower() in AUDIO_EXTENSIONS else name
    candidates = [folder / name] + [folder / (stem + ext) for ext in (".mp3",) + AUDIO_EXTENSIONS]
    return next((str(path.absolute()) for path in candidates if path.is_file()), None)


TEMPORARY_SUFFIX = ".tmp"


def write_atomic(path: str | os.PathLike, content: str | bytes) -> None:
    """Write (text as UTF-8) beside the final name, then rename: a reader, or a run killed meanwhile, sees the old
    file or the new one, never part of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + TEMPORARY_SUFFIX)
    temporary.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    os.replace(temporary, path)


__all__ = ["TEMPORARY_SUFFIX", "find_audio", "write_atomic"]
