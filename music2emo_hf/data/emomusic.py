"""Reader for EmoMusic ("1000 songs for emotional analysis of music", 744 songs after de-duplication), in the layout
of the official download.

`songs_info.csv` quotes its fields with tabs inside the quotes ("\\tBlues\\t"), so every cell is stripped; its
"Mediaeval 2013 set" column is the official split (development -> train, evaluation -> test).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..labels import EMOMUSIC_VA_SCALE
from .deam import SERIES_HOP, SERIES_START, parse_number, read_dynamic, read_id_splits, read_table, song_id
from .files import required
from .schema import Track

CORPUS = "emomusic"
OFFICIAL_SPLITS = {"development": "train", "evaluation": "test"}
_INFO_FIELDS = {"Artist": "artist", "Song title": "title", "Genre": "genre"}


def _seconds(value: str, path: Path, line: int) -> int:
    """'1.33' -> 93: songs_info writes segment bounds as min.sec, and '2.1' means 2 min 10 s."""
    minutes, _, seconds = value.partition(".")
    seconds = (seconds + "0")[:2] if seconds else "0"
    if not minutes.isdigit() or not seconds.isdigit() or int(seconds) >= 60:
        raise ValueError(f"{path}, line {line}: segment bound {value!r} is not min.sec")
    return int(minutes) * 60 + int(seconds)


def _read_info(path: Path) -> dict[str, dict[str, str]]:
    header, body = read_table(path, "EmoMusic")
    needed = ("song_id", "file_name", "Mediaeval 2013 set")
    missing = [name for name in needed if name not in header]
    if missing:
        raise ValueError(f"{path}, line 1: no {', '.join(missing)} column(s) in {header}")
    info: dict[str, dict[str, str]] = {}
    for line, row in body:
        if len(row) != len(header):
            raise ValueError(f"{path}, line {line}: {len(row)} columns, the header has {len(header)}")
        cells = dict(zip(header, (cell.strip() for cell in row)))
        cells["line"] = str(line)
        track_id = song_id(cells["song_id"], path, line)
        if track_id in info:
            raise ValueError(f"{path}: duplicate song ids: {track_id} (lines {info[track_id]['line']} and {line})")
        info[track_id] = cells
    return info


def read(source: str | os.PathLike, splits_dir: str | os.PathLike | None = None) -> list[Track]:
    """The EmoMusic songs of `static_annotations.csv` under `source`, with static V/A (1-9, `EMOMUSIC_VA_SCALE`),
    the 2 Hz dynamic series of `{valence,arousal}_cont_average.csv` when present (native [-1, 1] scale, from 15 s),
    audio `clips_45seconds/<file_name>`, and the official MediaEval 2013 split of `songs_info.csv` — or Music2Emo's
    train/validation/test id lists in `splits_dir`, which override it (unlisted songs get None)."""
    root = Path(source)
    static_path = required(root / "static_annotations.csv", "EmoMusic")
    info_path = required(root / "songs_info.csv", "EmoMusic")
    info = _read_info(info_path)
    header, body = read_table(static_path, "EmoMusic")
    for column in ("song_id", "mean_valence", "mean_arousal"):
        if column not in header:
            raise ValueError(f"{static_path}, line 1: no {column!r} column in {header}")

    def new_track(track_id: str) -> Track:
        """A track with its audio and what songs_info.csv says about it (official split, duration, genre...)."""
        track = Track(track_id=track_id, corpus=CORPUS)
        song = info.get(track_id)
        audio = root / "clips_45seconds" / (song["file_name"] if song and song["file_name"] else f"{track_id}.mp3")
        track.audio = str(audio.absolute()) if audio.is_file() else None
        if song is not None:
            info_line = int(song["line"])
            official = song["Mediaeval 2013 set"]
            if official not in OFFICIAL_SPLITS:
                raise ValueError(f"{info_path}, line {info_line}: Mediaeval 2013 set {official!r} is not one of "
                                 f"{', '.join(OFFICIAL_SPLITS)}")
            track.split = OFFICIAL_SPLITS[official]
            track.extra.update({key: song[name] for name, key in _INFO_FIELDS.items() if song.get(name)})
            bounds = [song.get(f"{end} of the segment (min.sec)", "") for end in ("start", "end")]
            if all(bounds):
                start, end = (_seconds(bound, info_path, info_line) for bound in bounds)
                track.duration = float(end - start)
                track.extra["segment_start"] = float(start)
        return track

    tracks: dict[str, Track] = {}
    duplicates: list[str] = []
    for line, row in body:
        if len(row) != len(header):
            raise ValueError(f"{static_path}, line {line}: {len(row)} columns, the header has {len(header)}")
        cells = dict(zip(header, row))  # by name: song_id need not come first
        track_id = song_id(cells.pop("song_id"), static_path, line)
        if track_id in tracks:
            duplicates.append(f"{track_id} (line {line})")
        values = {column: parse_number(cell, static_path, line) for column, cell in cells.items()}
        track = new_track(track_id)
        track.extra.update({k: values[k] for k in ("std_valence", "std_arousal") if k in values})
        track.set_static_va(values["mean_valence"], values["mean_arousal"], EMOMUSIC_VA_SCALE)
        tracks[track_id] = track
    if duplicates:
        raise ValueError(f"{static_path}: duplicate song ids: {', '.join(duplicates)}")
    for dimension in ("valence", "arousal"):
        path = root / f"{dimension}_cont_average.csv"
        if not path.is_file():
            continue
        for track_id, series in read_dynamic(path, "EmoMusic").items():
            # A song with only dynamic labels is still a labelled track: keep it (static V/A None).
            track = tracks.get(track_id) or tracks.setdefault(track_id, new_track(track_id))
            setattr(track, f"{dimension}_series", series)
            track.series_start, track.series_hop = SERIES_START, SERIES_HOP
    if splits_dir is not None:
        assignment = read_id_splits(splits_dir, set(tracks), "EmoMusic")
        for track in tracks.values():
            track.split = assignment.get(track.track_id)
    return list(tracks.values())


__all__ = ["CORPUS", "OFFICIAL_SPLITS", "read"]
