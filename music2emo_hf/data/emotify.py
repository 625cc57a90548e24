"""Emotify reader: GEMS votes of game listeners, one ``data.csv`` row per listener and track.

Official layout under the corpus root::

    data.csv               track id, genre, amazement, ..., sadness, mood, liked, disliked, age, gender, mother tongue
                           (header names with leading spaces; the nine GEMS columns are 0/1 votes)
    <genre>/<n>.mp3        the audio, one folder of 100 per genre (classical, rock, electronic, pop)

Rows are grouped by (track id, genre), as the cross-dataset paper keyed them (``"<id>,<genre>"``); the track id here
is ``"<genre>/<id>"``. Track ids run 1-400 across the corpus while each genre folder numbers its files 1-100: the
paper's processed labels map ``"101,rock"`` to ``rock/1.wav`` (all 400 tracks follow ``n = (id - 1) % 100 + 1``), so
that is the file looked for. `mood_targets` are vote shares: the listeners of the track who ticked each label,
divided by its number of listeners (`EMOTIFY_GEMS` order).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from ..labels import EMOTIFY_GEMS
from .files import find_audio, required, utf8_text
from .schema import Track

CORPUS = "emotify"
DATA = Path("data.csv")
RULES = ("top3", "vote_share")
TRACKS_PER_GENRE = 100
_KEYS = ("track id", "genre")


def select_moods(votes: list[int], listeners: int, rule: str = "top3", min_share: float | None = None) -> list[str]:
    """The GEMS labels of one track from its vote counts (`EMOTIFY_GEMS` order).

    - ``top3``: the three most voted labels, ties by column order as the original ``Counter.most_common(3)`` broke
      them; labels nobody voted for are left out (the original would have filled up to three with them).
    - ``vote_share``: every label ticked by at least `min_share` of the track's listeners.

    Labels come most voted first, ties in column order.
    """
    ranked = sorted((index for index, count in enumerate(votes) if count > 0), key=lambda index: -votes[index])
    if rule == "top3":
        if min_share is not None:
            raise ValueError("Emotify: `min_share` applies to rule='vote_share' only")
        return [EMOTIFY_GEMS[index] for index in ranked[:3]]
    if rule == "vote_share":
        if min_share is None or not 0 < min_share <= 1:
            raise ValueError(f"Emotify: the vote_share rule needs a share of listeners in (0, 1] (--threshold), got "
                             f"{min_share!r}")
        return [EMOTIFY_GEMS[index] for index in ranked if votes[index] / listeners >= min_share]
    raise ValueError(f"Emotify: unknown label rule {rule!r}; expected one of {RULES}")


def _file_number(path: Path, track: str) -> str:
    """The audio file stem of a track id within its genre folder (see the module docstring)."""
    if not track.isdigit() or int(track) < 1:
        raise ValueError(f"Emotify: {path}: track id {track!r} is not a positive integer")
    return str((int(track) - 1) % TRACKS_PER_GENRE + 1)


def _read_votes(path: Path) -> dict[tuple[str, str], list[int]]:
    """{(genre, id): [listeners, vote count per GEMS label]} in first-seen order."""
    totals: dict[tuple[str, str], list[int]] = {}
    with utf8_text(path) as handle:
        reader = csv.reader(handle)
        header = [name.strip() for name in next(reader, [])]
        missing = [name for name in _KEYS + EMOTIFY_GEMS if name not in header]
        if missing:
            raise ValueError(f"Emotify: {path} line 1: header lacks the columns {missing}")
        columns = [header.index(name) for name in _KEYS + EMOTIFY_GEMS]
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise ValueError(f"Emotify: {path} line {reader.line_num}: {len(row)} fields, expected {len(header)}")
            track, genre, *cells = (row[i].strip() for i in columns)
            if not track or not genre or any(cell not in ("0", "1") for cell in cells):
                raise ValueError(
                    f"Emotify: {path} line {reader.line_num}: need a track id, a genre and 0/1 votes: {row}"
                )
            counts = totals.setdefault((genre, track), [0] * (1 + len(EMOTIFY_GEMS)))
            counts[0] += 1
            for index, cell in enumerate(cells, 1):
                counts[index] += cell == "1"
    return totals


def read(source: str | os.PathLike, rule: str = "top3", min_share: float | None = None) -> list[Track]:
    """One row per (genre, track id) of ``data.csv``, in first-seen order, with vote shares and the labels `rule`
    picks. `extra` keeps the genre, the numeric id and the number of listeners."""
    root = Path(source)
    select_moods([0] * len(EMOTIFY_GEMS), 1, rule, min_share)  # reject a bad rule before reading anything
    path = required(root / DATA, "Emotify")
    tracks = []
    for (genre, track), (listeners, *votes) in _read_votes(path).items():
        tracks.append(
            Track(
                track_id=f"{genre}/{track}",
                corpus=CORPUS,
                audio=find_audio(root / genre, _file_number(path, track)),
                moods=select_moods(votes, listeners, rule, min_share),
                mood_targets=[count / listeners for count in votes],
                extra={"genre": genre, "id": track, "listeners": listeners},
            )
        )
    return tracks


__all__ = ["RULES", "read", "select_moods"]
