"""Finding a corpus's audio files by the names its annotations give."""

from __future__ import annotations

from pathlib import Path

from ..audio import AUDIO_EXTENSIONS


def find_audio(folder: Path, name: str) -> str | None:
    """Absolute path of `name` in `folder` (a file name, or a bare stem taken as mp3), else of the same stem with
    another audio extension (a converted copy); None when the download lacks it, so the track is kept and reported."""
    stem = Path(name).stem if Path(name).suffix.lower() in AUDIO_EXTENSIONS else name
    candidates = [folder / name] + [folder / (stem + ext) for ext in (".mp3",) + AUDIO_EXTENSIONS]
    return next((str(path.absolute()) for path in candidates if path.is_file()), None)


__all__ = ["find_audio"]
