"""Reader for DEAM (MediaEval Database for Emotional Analysis in Music), in the layout of the official download.

Also holds the two formats DEAM shares with EmoMusic: the 2 Hz dynamic annotation files (`song_id, sample_15000ms,
sample_15500ms, ...`) and Music2Emo's published split id lists (`train.txt`, `validation.txt`, `test.txt`).
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from ..labels import DEAM_VA_SCALE
from .files import required, utf8_text
from .schema import Track

CORPUS = "deam"
SPLIT_NAMES = ("train", "validation", "test")
SERIES_START = 15.0
SERIES_HOP = 0.5
STATIC_FILES = ("static_annotations_averaged_songs_1_2000.csv", "static_annotations_averaged_songs_2000_2058.csv")
STATIC_DIR = Path("annotations", "annotations averaged per song", "song_level")
DYNAMIC_DIR = Path("annotations", "annotations averaged per song", "dynamic (per second annotations)")


def read_table(path: Path, corpus: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header (names stripped, and `valence_ max_mean` as DEAM writes it read as `valence_max_mean`) and
    (line, cells) rows, blank rows left out."""
    with utf8_text(required(path, corpus)) as handle:
        rows = list(csv.reader(handle))
    if not rows:
        raise ValueError(f"{path}, line 1: empty file, expected a header")
    header = [name.strip().replace("_ ", "_") for name in rows[0]]
    body = [(line, row) for line, row in enumerate(rows[1:], start=2) if any(cell.strip() for cell in row)]
    return header, body


def parse_number(value: str | None, path: Path, line: int, column: str | None = None) -> float:
    """A cell's finite number (NaN and inf are refused: a NaN label is skipped by every loss, an inf one poisons it);
    errors name the file, line and, where given, column. None: a row shorter than its header."""
    where = f"{path}, line {line}" + (f", {column!r}" if column else "")
    if value is None:
        raise ValueError(f"{where}: no value (the row is shorter than the header)")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{where}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{where}: {value!r} is not a finite number")
    return number


def song_id(value: str, path: Path, line: int) -> str:
    """Song ids are integers in every file; normalise '0002' or ' 2' to '2' so files join."""
    value = value.strip()
    if not value.isdigit():
        raise ValueError(f"{path}, line {line}: malformed song id {value!r}")
    return str(int(value))


def read_dynamic(path: Path, corpus: str) -> dict[str, list[float]]:
    """song id -> 2 Hz series of one dynamic file. The header must be `sample_15000ms` onwards in 500 ms steps;
    rows may end early (empty trailing cells: DEAM's full songs differ in length) but have no inner gap."""
    header, body = read_table(path, corpus)
    expected = [f"sample_{int(SERIES_START * 1000 + i * SERIES_HOP * 1000)}ms" for i in range(len(header) - 1)]
    if header[:1] != ["song_id"] or header[1:] != expected:
        raise ValueError(f"{path}, line 1: expected song_id then {', '.join(expected[:2])}, ... every 500 ms")
    series: dict[str, list[float]] = {}
    duplicates: list[str] = []
    for line, row in body:
        cells = [cell.strip() for cell in row[1:]]
        while cells and not cells[-1]:
            cells.pop()
        if len(cells) > len(expected):
            raise ValueError(f"{path}, line {line}: {len(cells)} values for {len(expected)} columns")
        track_id = song_id(row[0], path, line)
        if track_id in series:
            duplicates.append(f"{track_id} (line {line})")
        series[track_id] = [parse_number(cell, path, line) for cell in cells]
    if duplicates:
        raise ValueError(f"{path}: duplicate song ids: {', '.join(duplicates)}")
    return series


def read_id_splits(splits_dir: str | os.PathLike, known: set[str], corpus: str) -> dict[str, str]:
    """song id -> split name from Music2Emo's `train.txt`/`validation.txt`/`test.txt` (one id per line).
    An id the corpus does not have, or one in two lists, means the lists belong elsewhere: raise."""
    paths = {name: Path(splits_dir) / f"{name}.txt" for name in SPLIT_NAMES}
    for path in paths.values():
        if not path.is_file():
            raise FileNotFoundError(f"{corpus}: expected split id list {path}")
    assignment: dict[str, str] = {}
    for name, path in paths.items():
        with utf8_text(path) as handle:
            lines = handle.read().splitlines()
        for line, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            track_id = song_id(raw, path, line)
            if track_id not in known:
                raise ValueError(f"{path}, line {line}: song {track_id} is not in the {corpus} annotations")
            if track_id in assignment:
                raise ValueError(f"{path}, line {line}: song {track_id} is already in {assignment[track_id]!r}")
            assignment[track_id] = name
    return assignment


def _find(root: Path, folder: Path, name: str) -> Path:
    """The file in its official folder, else directly in `root` (a flat copy of the csv files)."""
    official = root / folder / name
    return official if official.is_file() or not (root / name).is_file() else root / name


def read(
    source: str | os.PathLike,
    split: str | None = None,
    splits_dir: str | os.PathLike | None = None,
) -> list[Track]:
    """The 1,802 DEAM songs under `source` with static V/A (1-9, `DEAM_VA_SCALE`) and, when present, the 2 Hz
    dynamic series (native [-1, 1] scale of those files, from 15 s).

    Files are looked up in the official folders (`annotations/annotations averaged per song/song_level/` and
    `.../dynamic (per second annotations)/{valence,arousal}.csv`), else directly in `source`, so a flat folder of
    the csv files also works. Audio: `MEMD_audio/<id>.mp3`. DEAM has no official split: every track gets `split`
    (default None) unless `splits_dir` holds Music2Emo's id lists, which then decide (unlisted songs get None).
    """
    root = Path(source)

    def new_track(track_id: str) -> Track:
        audio = root / "MEMD_audio" / f"{track_id}.mp3"
        return Track(track_id, CORPUS, split=split, audio=str(audio.absolute()) if audio.is_file() else None)

    tracks: dict[str, Track] = {}
    duplicates: list[str] = []
    for name in STATIC_FILES:
        path = _find(root, STATIC_DIR, name)
        header, body = read_table(path, "DEAM")
        for column in ("song_id", "valence_mean", "arousal_mean"):
            if column not in header:
                raise ValueError(f"{path}, line 1: no {column!r} column in {header}")
        for line, row in body:
            if len(row) != len(header):
                raise ValueError(f"{path}, line {line}: {len(row)} columns, the header has {len(header)}")
            cells = dict(zip(header, row))  # by name: song_id need not come first
            track_id = song_id(cells.pop("song_id"), path, line)
            if track_id in tracks:
                duplicates.append(f"{track_id} ({path.name}, line {line})")
            values = {column: parse_number(cell, path, line) for column, cell in cells.items()}
            track = new_track(track_id)
            track.extra = {k: v for k, v in values.items() if k not in ("valence_mean", "arousal_mean")}
            track.set_static_va(values["valence_mean"], values["arousal_mean"], DEAM_VA_SCALE)
            tracks[track_id] = track
    if duplicates:
        raise ValueError(f"DEAM static annotations: duplicate song ids: {', '.join(duplicates)}")
    for dimension in ("valence", "arousal"):
        path = _find(root, DYNAMIC_DIR, f"{dimension}.csv")
        if not path.is_file():
            continue
        for track_id, series in read_dynamic(path, "DEAM").items():
            # A song with only dynamic labels is still a labelled track: keep it (static V/A None).
            track = tracks.get(track_id) or tracks.setdefault(track_id, new_track(track_id))
            setattr(track, f"{dimension}_series", series)
            track.series_start, track.series_hop = SERIES_START, SERIES_HOP
    if splits_dir is not None:
        assignment = read_id_splits(splits_dir, set(tracks), "DEAM")
        for track in tracks.values():
            track.split = assignment.get(track.track_id)
    return list(tracks.values())


__all__ = [
    "CORPUS",
    "SERIES_HOP",
    "SERIES_START",
    "SPLIT_NAMES",
    "read",
    "parse_number",
    "read_dynamic",
    "read_id_splits",
    "read_table",
    "song_id",
]
