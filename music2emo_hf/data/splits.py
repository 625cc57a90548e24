"""Seeded, track-level, label-stratified splits for corpora without an official one.

Each track goes to exactly one split (the cross-dataset paper split 10 s segments and so leaked tracks across
splits). Stratification is iterative (Sechidis et al., 2011): labels are taken rarest first and each of their tracks
goes to the split that still lacks that label most, so every split keeps the corpus's label proportions, including
multi-label ones. What counts as a label is `stratification_labels`: the moods, the genre where the corpus has one,
and the valence/arousal quadrant where the corpus has ratings.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence

from .schema import Track

DEFAULT_FRACTIONS: Mapping[str, float] = {"train": 0.8, "validation": 0.1, "test": 0.1}


def stratification_labels(track: Track) -> set[str]:
    labels = {f"mood={mood}" for mood in track.moods}
    if track.extra.get("genre"):
        labels.add(f"genre={track.extra['genre']}")
    if track.valence_normalized is not None and track.arousal_normalized is not None:
        labels.add(f"va={'+' if track.valence_normalized >= 0 else '-'}{'+' if track.arousal_normalized >= 0 else '-'}")
    return labels


def _check_fractions(fractions: Mapping[str, float]) -> None:
    if not fractions or any(not 0 < f <= 1 for f in fractions.values()) or abs(sum(fractions.values()) - 1) > 1e-6:
        raise ValueError(f"split fractions must be positive and sum to 1, got {dict(fractions)}")


def assign_splits(
    tracks: Sequence[Track], fractions: Mapping[str, float] = DEFAULT_FRACTIONS, seed: int = 0
) -> None:
    """Give every track whose `split` is None one of `fractions`' splits, in place. Tracks that already have a split
    (an official one) keep it. The same tracks, fractions and seed always give the same assignment."""
    _check_fractions(fractions)
    todo = sorted((t for t in tracks if t.split is None), key=lambda t: t.track_id)
    rng = random.Random(seed)
    rng.shuffle(todo)
    labels = {id(t): stratification_labels(t) for t in todo}
    counts = Counter(label for t in todo for label in labels[id(t)])
    wanted = {name: {label: f * n for label, n in counts.items()} for name, f in fractions.items()}
    room = {name: f * len(todo) for name, f in fractions.items()}
    order = list(fractions)

    def place(track: Track, label: str | None) -> None:
        best = max(
            order,
            key=lambda name: (wanted[name][label] if label else 0.0, room[name], -order.index(name)),
        )
        track.split = best
        room[best] -= 1
        for other in labels[id(track)]:
            wanted[best][other] -= 1

    remaining = list(todo)
    while remaining:
        open_counts = Counter(label for t in remaining for label in labels[id(t)])
        if not open_counts:
            for track in remaining:
                place(track, None)
            break
        rarest = min(open_counts, key=lambda label: (open_counts[label], label))
        for track in [t for t in remaining if rarest in labels[id(t)]]:
            place(track, rarest)
        remaining = [t for t in remaining if t.split is None]


def split_off(
    tracks: Sequence[Track], source: str, fractions: Mapping[str, float], seed: int = 0
) -> None:
    """Re-split the tracks of split `source` by `fractions` (e.g. a validation part out of an official training
    split that has none), stratified and seeded as `assign_splits`."""
    part = [t for t in tracks if t.split == source]
    for track in part:
        track.split = None
    assign_splits(part, fractions, seed)


__all__ = ["DEFAULT_FRACTIONS", "assign_splits", "split_off", "stratification_labels"]
