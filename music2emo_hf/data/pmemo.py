"""PMEmo (PMEmo2019) reader: static and dynamic valence/arousal of chorus excerpts.

Official layout under the corpus root::

    annotations/static_annotations.csv    musicId,Arousal(mean),Valence(mean)            (0-1 scale)
    annotations/dynamic_annotations.csv   musicId,frameTime,Arousal(mean),Valence(mean)   (2 Hz from 15.5 s; optional)
    metadata.csv                          musicId,fileName,title,artist,album,duration,...
    chorus/<fileName>                     the audio (``<musicId>.mp3``)

Music2Emo shipped a rescaled static file instead (``song_id,valence_mean,valence_std,arousal_mean,arousal_std``, means
≈ 1 + 8·x on the 1-9 scale). Placed at the same path it is recognised by its header and read on `labels.VA_SCALE`, so
the native scale of each row always matches the numbers it carries. Its ``*_std`` columns are not kept (their scale is
not documented).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from ..labels import PMEMO_VA_SCALE, VA_SCALE, RatingScale
from .deam import parse_number, read_id_splits
from .files import find_audio, required, utf8_text
from .schema import Track

CORPUS = "pmemo"
STATIC = Path("annotations") / "static_annotations.csv"
DYNAMIC = Path("annotations") / "dynamic_annotations.csv"
METADATA = Path("metadata.csv")
AUDIO_DIR = Path("chorus")

_ORIGINAL_COLUMNS = ("musicId", "Arousal(mean)", "Valence(mean)")
_RESCALED_COLUMNS = ("song_id", "valence_mean", "arousal_mean")
_HOP_TOLERANCE = 1e-6


def _rows(path: Path):
    """(line number, row dict) for each data row; the header is line 1."""
    with utf8_text(path) as handle:
        reader = csv.DictReader(handle)
        reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
        yield reader.fieldnames, None
        for row in reader:
            yield reader.line_num, row


def _song_id(path: Path, line: int, value: str | None) -> str:
    value = (value or "").strip()
    if not value:
        raise ValueError(f"PMEmo: {path} line {line}: empty song id")
    return value


def _read_static(path: Path) -> tuple[dict[str, tuple[float, float]], RatingScale]:
    """{id: (valence, arousal)} and the scale the file is on, told apart by its header."""
    rows = _rows(path)
    header, _ = next(rows)
    if all(column in header for column in _ORIGINAL_COLUMNS):
        id_col, v_col, a_col, scale = "musicId", "Valence(mean)", "Arousal(mean)", PMEMO_VA_SCALE
    elif all(column in header for column in _RESCALED_COLUMNS):
        id_col, v_col, a_col, scale = "song_id", "valence_mean", "arousal_mean", VA_SCALE
    else:
        raise ValueError(
            f"PMEmo: {path} line 1: header {header} is neither the original {list(_ORIGINAL_COLUMNS)} "
            f"nor Music2Emo's rescaled {list(_RESCALED_COLUMNS)}"
        )
    static: dict[str, tuple[float, float]] = {}
    duplicates: list[str] = []
    for line, row in rows:
        song = _song_id(path, line, row.get(id_col))
        if song in static:
            duplicates.append(song)
        static[song] = tuple(parse_number(row.get(column), path, line, column) for column in (v_col, a_col))
    if duplicates:
        raise ValueError(f"PMEmo: {path}: duplicate song ids {sorted(set(duplicates))}")
    return static, scale


def _read_dynamic(path: Path) -> dict[str, tuple[list[float], list[float], float, float]]:
    """{id: (valence series, arousal series, start, hop)}; frames must be evenly spaced and not repeat."""
    frames: dict[str, dict[float, tuple[float, float]]] = {}
    rows = _rows(path)
    next(rows)
    for line, row in rows:
        song = _song_id(path, line, row.get("musicId"))
        time = parse_number(row.get("frameTime"), path, line, "frameTime")
        song_frames = frames.setdefault(song, {})
        if time in song_frames:
            raise ValueError(f"PMEmo: {path} line {line}: frame {time} s of song {song} repeats")
        song_frames[time] = tuple(parse_number(row.get(column), path, line, column)
                                  for column in ("Valence(mean)", "Arousal(mean)"))
    series = {}
    for song, song_frames in frames.items():
        times = sorted(song_frames)
        hop = times[1] - times[0] if len(times) > 1 else None
        if hop is not None and any(abs(b - a - hop) > _HOP_TOLERANCE for a, b in zip(times, times[1:])):
            raise ValueError(f"PMEmo: {path}: frame times of song {song} are not evenly spaced: {times}")
        series[song] = ([song_frames[t][0] for t in times], [song_frames[t][1] for t in times], times[0], hop)
    return series


def _read_metadata(path: Path) -> dict[str, dict[str, str]]:
    metadata: dict[str, dict[str, str]] = {}
    rows = _rows(path)
    next(rows)
    for line, row in rows:
        song = _song_id(path, line, row.get("musicId"))
        if song in metadata:
            raise ValueError(f"PMEmo: {path} line {line}: duplicate song id {song}")
        metadata[song] = {key: (value or "").strip() for key, value in row.items()}
        if metadata[song].get("duration"):
            parse_number(row.get("duration"), path, line, "duration")
    return metadata


def read(source: str | os.PathLike, splits_dir: str | os.PathLike | None = None) -> list[Track]:
    """Every PMEmo song with a static or dynamic annotation, sorted by numeric id.

    `splits_dir` holds Music2Emo's id lists; without it `split` is None (PMEmo has no official split). Ids in a
    split list that have no annotation raise ValueError rather than vanish.
    """
    root = Path(source)
    static, scale = _read_static(required(root / STATIC, "PMEmo"))
    dynamic = _read_dynamic(root / DYNAMIC) if (root / DYNAMIC).is_file() else {}
    metadata = _read_metadata(required(root / METADATA, "PMEmo"))
    songs = set(static) | set(dynamic)
    split_of = read_id_splits(splits_dir, songs, "PMEmo") if splits_dir is not None else {}
    tracks = []
    for song in sorted(songs, key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s)):
        meta = metadata.get(song, {})
        duration = meta.get("duration")
        track = Track(
            track_id=song,
            corpus=CORPUS,
            split=split_of.get(song),
            audio=find_audio(root / AUDIO_DIR, meta.get("fileName") or f"{song}.mp3"),
            duration=float(duration) if duration else None,
            extra={key: meta[key] for key in ("title", "artist", "album") if meta.get(key)},
        )
        if song in static:
            track.set_static_va(*static[song], scale)
        if song in dynamic:
            track.valence_series, track.arousal_series, track.series_start, track.series_hop = dynamic[song]
        tracks.append(track)
    return tracks


__all__ = ["read"]
