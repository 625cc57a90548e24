"""CAL500 readers: the UCSD per-annotator release (all 18 emotion concepts) and the MULAN ARFF release.

UCSD layout under the corpus root::

    songNames.txt                  one song stem a line (``artist-title``)
    vocab.txt                      the survey vocabulary, ``Emotion-Happy``, ``Emotion-Laid-back_/_Mellow``, ...
    annotations/<song>_<NN>.txt    one file per annotator, lines like ``Emotion-Happy="3"``
    mp3/<song>.mp3                 the audio

`mood_targets` are the raw mean ratings over a song's annotators (not rescaled), in `CAL500_EMOTIONS` order, so the
label rules' thresholds are on the survey's own scale. The cross-dataset paper's regex ``Emotion-[\\w/_]+`` could not
match the hyphen of ``Laid-back_/_Mellow``; here any name up to ``=`` is read, so all 18 concepts count.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np

from ..labels import CAL500_EMOTIONS
from .files import find_audio, required, utf8_text
from .schema import Track

CORPUS = "cal500"
SONG_NAMES = Path("songNames.txt")
VOCAB = Path("vocab.txt")
ANNOTATIONS_DIR = Path("annotations")
AUDIO_DIR = Path("mp3")
RULES = ("top5_above_4", "threshold")

_PREFIX = "Emotion-"
_RATING = re.compile(r'^\s*(Emotion-[^=\s]+)\s*=\s*"([^"]*)"\s*$')
_ANNOTATOR_FILE = re.compile(r"^(?P<song>.+)_(?P<annotator>\d+)\.txt$")
# The MULAN ARFF drops the ``_/_`` of the UCSD names (``Emotion-Calming-Soothing``) and spells one concept
# ``Angry-Agressive`` without its prefix.
_ARFF_NAMES = {_PREFIX + name.replace("_/_", "-"): name for name in CAL500_EMOTIONS} | {
    "Angry-Agressive": "Angry_/_Aggressive"
}
# The UCSD files themselves spell that concept ``Angry_/_Agressive`` (the cross-dataset paper corrected it); the
# corrected spelling is read too.
_UCSD_SPELLING = {"Angry_/_Agressive": "Angry_/_Aggressive"}


def _concept(word: str) -> str:
    """A vocabulary word or rating name as its concept in CAL500_EMOTIONS: prefix dropped, spelling corrected."""
    concept = word.removeprefix(_PREFIX)
    return _UCSD_SPELLING.get(concept, concept)


def _read_annotator(path: Path) -> dict[str, float]:
    """{concept: rating} of one annotator file; every ``Emotion-`` line must be a rating of a known concept."""
    ratings = {}
    for line_number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip().startswith(_PREFIX):
            continue
        match = _RATING.match(line)
        concept = match and _concept(match.group(1))
        if not match or concept not in CAL500_EMOTIONS:
            raise ValueError(f"CAL500: {path} line {line_number}: not a rating of a known emotion: {line!r}")
        try:
            ratings[concept] = float(match.group(2))
        except ValueError:
            raise ValueError(f"CAL500: {path} line {line_number}: rating is not a number: {line!r}") from None
        if not math.isfinite(ratings[concept]):  # one NaN would void the song's mean of the others' ratings
            raise ValueError(f"CAL500: {path} line {line_number}: rating is not a finite number: {line!r}")
    return ratings


def select_moods(means: list[float], rule: str = "top5_above_4", threshold: float | None = None) -> list[str]:
    """The emotion labels of one song from its mean ratings (`CAL500_EMOTIONS` order; NaN = never rated).

    - ``top5_above_4``: the cross-dataset paper's rule as its code ran: if any mean exceeds 4, the 5 highest means
      (even those not above 4), else only the highest.
    - ``threshold``: every concept whose mean is at least `threshold`.

    Labels come highest mean first, ties in vocabulary order.
    """
    ranked = sorted(
        ((value, index) for index, value in enumerate(means) if not math.isnan(value)),
        key=lambda pair: (-pair[0], pair[1]),
    )
    if rule == "top5_above_4":
        if threshold is not None:
            raise ValueError("CAL500: `threshold` applies to rule='threshold' only")
        keep = ranked[:5] if any(value > 4 for value, _ in ranked) else ranked[:1]
    elif rule == "threshold":
        if threshold is None:
            raise ValueError("CAL500: rule='threshold' needs `threshold`")
        keep = [(value, index) for value, index in ranked if value >= threshold]
    else:
        raise ValueError(f"CAL500: unknown label rule {rule!r}; expected one of {RULES}")
    return [CAL500_EMOTIONS[index] for _, index in keep]


def read(source: str | os.PathLike, rule: str = "top5_above_4", threshold: float | None = None) -> list[Track]:
    """Every song of ``songNames.txt`` (file order), with mean ratings and the labels `rule` picks.

    A song without annotator files keeps its row with `mood_targets` None and no moods; an annotator file for a
    song not in ``songNames.txt`` raises ValueError. `extra["annotators"]` counts the files averaged.
    """
    root = Path(source)
    select_moods([], rule, threshold)  # reject a bad rule before reading anything
    with utf8_text(required(root / SONG_NAMES, "CAL500")) as handle:
        songs = handle.read().split()
    duplicates = sorted(song for song, count in Counter(songs).items() if count > 1)
    if duplicates:
        raise ValueError(f"CAL500: {root / SONG_NAMES}: duplicate song names {duplicates}")
    with utf8_text(required(root / VOCAB, "CAL500")) as handle:
        vocab = {_concept(word) for word in handle.read().split() if word.startswith(_PREFIX)}
    missing = [name for name in CAL500_EMOTIONS if name not in vocab]
    if missing:
        raise ValueError(f"CAL500: {root / VOCAB} lacks the emotion concepts {missing}")
    ratings: dict[str, list[dict[str, float]]] = {song: [] for song in songs}
    strays = []
    for path in sorted(required(root / ANNOTATIONS_DIR, "CAL500", "folder").iterdir()):
        match = _ANNOTATOR_FILE.match(path.name)
        if not match:
            continue
        if match["song"] not in ratings:
            strays.append(path.name)
            continue
        ratings[match["song"]].append(_read_annotator(path))
    if strays:
        raise ValueError(f"CAL500: annotator files for songs not in {root / SONG_NAMES}: {strays}")
    tracks = []
    for song in songs:
        track = Track(track_id=song, corpus=CORPUS, audio=find_audio(root / AUDIO_DIR, song))
        track.extra["annotators"] = len(ratings[song])
        if ratings[song]:
            sums = [[r[name] for r in ratings[song] if name in r] for name in CAL500_EMOTIONS]
            track.mood_targets = [sum(values) / len(values) if values else math.nan for values in sums]
            track.moods = select_moods(track.mood_targets, rule, threshold)
        tracks.append(track)
    return tracks


def _arff_tokens(path: Path):
    """(line number, stripped line) of the non-empty, non-comment lines of an ARFF file."""
    with utf8_text(path) as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if line and not line.startswith("%"):
                yield number, line


def read_arff(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The MULAN CAL500 release: (features float64 (N, 68), emotion labels uint8 (N, 18) in `CAL500_EMOTIONS`
    order, song ids).

    The file names no songs, so the ids are the row numbers ``"0"``… as strings (the MULAN rows follow UCSD's
    ``songNames.txt`` order [inferred]). Only the positive ``Emotion-`` labels are returned; their ``NOT-`` twins
    carry no more information.
    """
    path = required(Path(path), "CAL500", "MULAN ARFF file")
    attributes: list[tuple[str, str]] = []
    rows: list[list[str]] = []
    in_data = False
    for number, line in _arff_tokens(path):
        if in_data:
            values = [value.strip() for value in line.split(",")]
            if len(values) != len(attributes):
                raise ValueError(f"CAL500: {path} line {number}: {len(values)} values, expected {len(attributes)}")
            rows.append(values)
        elif line.lower().startswith("@attribute"):
            _, name, kind = line.split(None, 2)
            attributes.append((name.strip("'\""), kind.strip()))
        elif line.lower().startswith("@data"):
            in_data = True
    numeric = [i for i, (_, kind) in enumerate(attributes) if kind.lower() in ("numeric", "real")]
    emotion_column = {_ARFF_NAMES[name]: i for i, (name, _) in enumerate(attributes) if name in _ARFF_NAMES}
    missing = [name for name in CAL500_EMOTIONS if name not in emotion_column]
    if missing:
        raise ValueError(f"CAL500: {path} has no label attribute for the emotions {missing}")
    label_columns = [emotion_column[name] for name in CAL500_EMOTIONS]
    table = np.array(rows, dtype=object).reshape(len(rows), len(attributes))
    try:
        features = table[:, numeric].astype(np.float64)
        labels = table[:, label_columns].astype(np.float64)
    except ValueError as error:
        raise ValueError(f"CAL500: {path}: a value of the data section is not a number ({error})") from None
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"CAL500: {path}: emotion labels must be 0 or 1")
    return features, labels.astype(np.uint8), [str(i) for i in range(len(rows))]


__all__ = ["RULES", "read", "read_arff", "select_moods"]
