"""A corpus download's files: its annotation files where its official layout puts them, its audio files by the
names its annotations give."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from ..audio import AUDIO_EXTENSIONS


class MissingSourceFile(FileNotFoundError):
    """A file of a corpus's official download layout is not where the layout puts it; `path` is where it was looked
    for (`music2emo prepare-data` looks for it in the folders below --source too)."""

    def __init__(self, corpus: str, path: Path, what: str = "file"):
        super().__init__(f"{corpus}: expected {what} {path} is missing (the official download's layout)")
        self.path = path


def required(path: Path, corpus: str, what: str = "file") -> Path:
    """`path`, which the corpus's layout needs: a file, or a folder when `what` is "folder"."""
    if not (path.is_dir() if what == "folder" else path.is_file()):
        raise MissingSourceFile(corpus, path, what)
    return path


def find_audio(folder: Path, name: str) -> str | None:
    """Absolute path of `name` in `folder` (a file name, or a bare stem taken as mp3), else of the same stem with
    another audio extension (a converted copy); None when the download lacks it, so the track is kept and reported."""
    stem = Path(name).stem if Path(name).suffix.lower() in AUDIO_EXTENSIONS else name
    candidates = [folder / name] + [folder / (stem + ext) for ext in (".mp3",) + AUDIO_EXTENSIONS]
    return next((str(path.absolute()) for path in candidates if path.is_file()), None)


@contextmanager
def utf8_text(path: Path) -> Iterator[TextIO]:
    """An annotation file opened as UTF-8 text, a byte-order mark skipped; a file in another encoding (a spreadsheet's
    "Unicode text", Latin-1) is refused with its name, wherever the reading fails."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            yield handle
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text (byte {error.start:,}: {error.reason}); save it as UTF-8 and run "
                         "again.") from None


__all__ = ["MissingSourceFile", "find_audio", "required", "utf8_text"]
