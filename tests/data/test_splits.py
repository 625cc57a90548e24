"""Seeded, track-level, label-stratified splits."""

from __future__ import annotations

from collections import Counter

import pytest

from music2emo_hf.data.schema import Track
from music2emo_hf.data.splits import assign_splits, split_off
from music2emo_hf.labels import DEAM_VA_SCALE


def tag_tracks(n: int = 400) -> list[Track]:
    """A multi-label corpus with a rare label (5 %) and a common one (50 %), in 4 genres."""
    tracks = []
    for i in range(n):
        moods = ["common"] if i % 2 else []
        if i % 20 == 0:
            moods.append("rare")
        tracks.append(Track(str(i), "toy", moods=moods or ["plain"], extra={"genre": ("rock", "pop", "jazz", "folk")[i % 4]}))
    return tracks


def test_every_track_gets_one_split_in_the_asked_proportions():
    tracks = tag_tracks()
    assign_splits(tracks, seed=3)
    counts = Counter(t.split for t in tracks)
    assert counts == {"train": 320, "validation": 40, "test": 40}
    bare = [Track(str(i), "toy") for i in range(100)]  # nothing to stratify by (no tags, genre or ratings)
    assign_splits(bare, seed=3)
    assert Counter(t.split for t in bare) == {"train": 80, "validation": 10, "test": 10}


def test_labels_and_genres_keep_their_proportions_in_every_split():
    tracks = tag_tracks()
    assign_splits(tracks, seed=3)
    for split, share in (("train", 0.8), ("validation", 0.1), ("test", 0.1)):
        part = [t for t in tracks if t.split == split]
        assert sum("rare" in t.moods for t in part) == pytest.approx(20 * share, abs=1)
        assert sum("common" in t.moods for t in part) == pytest.approx(200 * share, abs=1)
        assert Counter(t.extra["genre"] for t in part)["jazz"] == pytest.approx(100 * share, abs=1.5)


def test_valence_arousal_quadrants_are_stratified():
    tracks = []
    for i in range(200):
        track = Track(str(i), "toy")
        track.set_static_va(2.0 if i % 4 < 1 else 7.0, 2.0 if i % 2 else 7.0, DEAM_VA_SCALE)
        tracks.append(track)
    assign_splits(tracks, {"train": 0.5, "test": 0.5}, seed=0)
    test = [t for t in tracks if t.split == "test"]
    assert len(test) == 100
    assert sum(t.valence < 5 for t in test) == pytest.approx(25, abs=1)


def test_same_seed_same_splits_other_seed_other_splits_official_splits_kept():
    first, second, third = tag_tracks(), tag_tracks(), tag_tracks()
    first[0].split = "test"
    second[0].split = "test"
    assign_splits(first, seed=1)
    assign_splits(second, seed=1)
    assign_splits(third, seed=2)
    assert [t.split for t in first] == [t.split for t in second]
    assert [t.split for t in first] != [t.split for t in third]
    assert first[0].split == "test"


def test_split_off_carves_validation_out_of_an_official_train_split():
    tracks = tag_tracks(100)
    for t in tracks:
        t.split = "test" if int(t.track_id) < 20 else "train"
    split_off(tracks, "train", {"train": 0.9, "validation": 0.1}, seed=0)
    assert Counter(t.split for t in tracks) == {"train": 72, "validation": 8, "test": 20}


def test_bad_fractions_are_refused():
    with pytest.raises(ValueError, match="sum to 1"):
        assign_splits(tag_tracks(10), {"train": 0.8, "test": 0.3})
