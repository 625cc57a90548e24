"""The one row type every corpus reader yields, whatever the corpus labels: mood tags, valence/arousal, or both."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..labels import RatingScale


@dataclass
class Track:
    """One track of one corpus.

    - `audio`: absolute path of the audio file where the download has it (None when it is missing).
    - `moods`: the labels chosen by the corpus's label rule, in the corpus's own vocabulary.
    - `mood_targets`: one value per label of the corpus vocabulary, in vocabulary order: 1/0 for tag corpora, or the
      per-label score where the corpus has votes or ratings (CAL500: mean rating; Emotify: share of listeners). None
      for corpora without mood labels.
    - `valence`, `arousal`: static means on the corpus's native scale; `valence_normalized`/`arousal_normalized`:
      the same mapped to [-1, 1] by that scale (see `labels.py`).
    - `valence_series`, `arousal_series`: dynamic annotations, one value every `series_hop` seconds from
      `series_start` seconds.
    - `extra`: corpus-specific fields worth keeping (genre, artist, title...).
    """

    track_id: str
    corpus: str
    split: str | None = None
    audio: str | None = None
    duration: float | None = None
    moods: list[str] = field(default_factory=list)
    mood_targets: list[float] | None = None
    valence: float | None = None
    arousal: float | None = None
    valence_normalized: float | None = None
    arousal_normalized: float | None = None
    valence_series: list[float] | None = None
    arousal_series: list[float] | None = None
    series_start: float | None = None
    series_hop: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def set_static_va(self, valence: float | None, arousal: float | None, scale: RatingScale) -> None:
        """Static V/A on the native `scale`, with their [-1, 1] normalisation; a value off the scale is refused (a
        typo in an annotation file, or a file on another scale)."""
        for name, value in (("valence", valence), ("arousal", arousal)):
            if value is not None and not (math.isfinite(value) and scale.low <= value <= scale.high):
                raise ValueError(f"{self.corpus}: song {self.track_id}'s static {name} {value!r} is off its annotation "
                                 f"file's {scale.low:g}-{scale.high:g} scale; correct the file or leave the song out.")
        self.valence, self.arousal = valence, arousal
        self.valence_normalized = None if valence is None else scale.to_unit(valence)
        self.arousal_normalized = None if arousal is None else scale.to_unit(arousal)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


__all__ = ["Track"]
