"""Reader for the MTG-Jamendo moodtheme subset, in the layout of the official download.

The metadata rows carry a VARIABLE number of tab-separated tag columns after the sixth column (one tag per column),
so the files are read as plain TSV rows, never as a fixed-width table. The full file also uses three tags outside
the official 56 (`ambiental`, `horror`, `mellow`; no split file has them): they stay out of `moods`/`mood_targets`
and are kept in `extra["other_tags"]`, so those tracks are still listed.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from ..labels import MTG_JAMENDO_MOODS
from .files import required, utf8_text
from .schema import Track

CORPUS = "mtg_jamendo"
TAG_PREFIX = "mood/theme---"
HEADER = ("TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION", "TAGS")
SPLIT_NAMES = ("train", "validation", "test")
N_SPLITS = 5
_MOOD_INDEX = {mood: i for i, mood in enumerate(MTG_JAMENDO_MOODS)}


def _rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, cells) of a TSV file after checking its header; quoting is off because tags are bare."""
    with utf8_text(path) as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows or tuple(cell.strip() for cell in rows[0][: len(HEADER)]) != HEADER:
        raise ValueError(f"{path}, line 1: expected the header {'/'.join(HEADER)}")
    return [(number, row) for number, row in enumerate(rows[1:], start=2) if any(cell.strip() for cell in row)]


def _track_id(raw: str, path: Path, line: int) -> str:
    """'track_0000948' -> '948': the integer id, which is also the audio file's stem."""
    prefix, _, digits = raw.strip().partition("_")
    if prefix != "track" or not digits.isdigit():
        raise ValueError(f"{path}, line {line}: malformed TRACK_ID {raw!r}")
    return str(int(digits))


def _audio(audio_dir: Path, relative: str) -> str | None:
    """The full-quality mp3, else the `.low.mp3` variant of the low-quality download, else None."""
    full = audio_dir / relative
    low = full.with_name(full.name[: -len(full.suffix)] + ".low" + full.suffix) if full.suffix else None
    for candidate in (full, low):
        if candidate is not None and candidate.is_file():
            return str(candidate.absolute())
    return None


def _read_split(data_dir: Path, split: int, known: set[str]) -> dict[str, str]:
    assignment: dict[str, str] = {}
    for name in SPLIT_NAMES:
        path = required(data_dir / "splits" / f"split-{split}" / f"autotagging_moodtheme-{name}.tsv",
                        "MTG-Jamendo moodtheme")
        for line, row in _rows(path):
            track_id = _track_id(row[0], path, line)
            if track_id not in known:
                raise ValueError(f"{path}, line {line}: track {track_id} is not in autotagging_moodtheme.tsv")
            if track_id in assignment:
                raise ValueError(f"{path}, line {line}: track {track_id} is already in {assignment[track_id]!r}")
            assignment[track_id] = name
    return assignment


def read(source: str | os.PathLike, split: int = 0) -> list[Track]:
    """All tracks of `data/autotagging_moodtheme.tsv` under `source`, with the train/validation/test assignment of
    the official `data/splits/split-<split>` (tracks in none of its files get split None)."""
    if split not in range(N_SPLITS):
        raise ValueError(f"MTG-Jamendo has official splits 0..{N_SPLITS - 1}, not {split!r}")
    root = Path(source)
    data_dir = root / "data"
    path = required(data_dir / "autotagging_moodtheme.tsv", "MTG-Jamendo moodtheme")
    tracks: list[Track] = []
    seen: dict[str, int] = {}
    duplicates: list[str] = []
    for line, row in _rows(path):
        if len(row) < len(HEADER):
            raise ValueError(f"{path}, line {line}: expected at least {len(HEADER)} tab-separated columns")
        track_id = _track_id(row[0], path, line)
        if track_id in seen:
            duplicates.append(f"{track_id} (lines {seen[track_id]} and {line})")
        seen[track_id] = line
        try:
            duration = float(row[4])
        except ValueError:
            raise ValueError(f"{path}, line {line}: DURATION {row[4]!r} is not a number") from None
        moods: list[str] = []
        other: list[str] = []
        for cell in row[5:]:
            tag = cell.strip()
            if not tag:
                continue
            if not tag.startswith(TAG_PREFIX):
                raise ValueError(f"{path}, line {line}: {tag!r} is not a {TAG_PREFIX} tag")
            name = tag[len(TAG_PREFIX):]
            bucket = moods if name in _MOOD_INDEX else other
            if name not in bucket:
                bucket.append(name)
        if not moods and not other:
            raise ValueError(f"{path}, line {line}: track {track_id} has no tag")
        targets = [0.0] * len(MTG_JAMENDO_MOODS)
        for mood in moods:
            targets[_MOOD_INDEX[mood]] = 1.0
        tracks.append(
            Track(
                track_id=track_id,
                corpus=CORPUS,
                audio=_audio(root / "audio", row[3].strip()),
                duration=duration,
                moods=moods,
                mood_targets=targets,
                extra={
                    "artist_id": row[1].strip(),
                    "album_id": row[2].strip(),
                    "path": row[3].strip(),
                    "other_tags": other,
                },
            )
        )
    if duplicates:
        raise ValueError(f"{path}: duplicate track ids: {', '.join(duplicates)}")
    assignment = _read_split(data_dir, split, set(seen))
    for track in tracks:
        track.split = assignment.get(track.track_id)
    return tracks


__all__ = ["CORPUS", "N_SPLITS", "SPLIT_NAMES", "TAG_PREFIX", "read"]
