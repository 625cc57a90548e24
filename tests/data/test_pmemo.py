"""PMEmo reader on the real files, laid out as the official download in a temporary folder."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from music2emo_hf.data import pmemo
from tests.conftest import require_fixtures


@pytest.fixture
def pmemo_root(tmp_path):
    """The official layout: the original 0-1 static file (values of scatter.json), the real dynamic file and
    metadata.csv, and the audio of song 4 only."""
    fixtures = require_fixtures("pmemo")
    (tmp_path / "annotations").mkdir()
    with open(tmp_path / "annotations" / "static_annotations.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["musicId", "Arousal(mean)", "Valence(mean)"])
        for song in json.loads((fixtures / "scatter.json").read_text()):
            writer.writerow([song["id"], song["a"], song["v"]])
    shutil.copy(fixtures / "dynamic_annotations.csv", tmp_path / "annotations")
    shutil.copy(fixtures / "metadata.csv", tmp_path)
    (tmp_path / "chorus").mkdir()
    (tmp_path / "chorus" / "4.mp3").write_bytes(b"not decoded")
    (tmp_path / "chorus" / "1.wav").write_bytes(b"not decoded")  # metadata.csv names 1.mp3: a converted copy
    return tmp_path


def by_id(tracks):
    return {track.track_id: track for track in tracks}


def test_original_layout_static_dynamic_metadata_and_audio(pmemo_root):
    tracks = by_id(pmemo.read(pmemo_root))
    assert len(tracks) == 767  # the annotated songs; metadata.csv lists 794
    song = tracks["4"]
    assert (song.corpus, song.split, song.duration) == ("pmemo", None, 28.09)
    assert (song.valence, song.arousal) == (0.287, 0.263)
    assert song.valence_normalized == pytest.approx(2 * 0.287 - 1)
    assert song.arousal_normalized == pytest.approx(2 * 0.263 - 1)
    assert len(song.valence_series) == len(song.arousal_series) == 26
    assert (song.valence_series[0], song.arousal_series[0]) == (0.3297875, 0.2923250000000001)
    assert (song.series_start, song.series_hop) == (15.5, 0.5)
    assert song.audio == str((pmemo_root / "chorus" / "4.mp3").resolve())
    assert tracks["1"].audio == str((pmemo_root / "chorus" / "1.wav").resolve())
    assert song.extra == {"title": "X Bitch (feat. Future)", "artist": "21 Savage", "album": "Savage Mode"}
    last = tracks["1000"]
    assert last.audio is None  # labelled but without audio: kept
    assert (last.valence, last.arousal, last.duration) == (0.575, 0.662, 77.21)
    assert last.valence_series[-1] == 0.5881124999999999 and last.series_start + last.series_hop * 123 == 77.0


def test_music2emo_rescaled_file_is_read_on_the_1_to_9_scale_with_its_splits(pmemo_root):
    fixtures = require_fixtures("pmemo")
    rescaled = fixtures / "static_annotations_rescaled_1to9.csv"
    shutil.copy(rescaled, pmemo_root / "annotations" / "static_annotations.csv")
    tracks = by_id(pmemo.read(pmemo_root, splits_dir=require_fixtures("music2emo_meta", "pmemo")))
    song = tracks["1000"]
    assert (song.valence, song.arousal, song.split) == (5.6, 6.3, "train")
    assert (song.valence_normalized, song.arousal_normalized) == pytest.approx((0.15, 0.325))
    counts = {split: sum(t.split == split for t in tracks.values()) for split in ("train", "validation", "test")}
    assert counts == {"train": 536, "validation": 116, "test": 115}
    assert tracks["138"].split == "test"


def test_missing_file_duplicates_and_malformed_rows(pmemo_root):
    static = pmemo_root / "annotations" / "static_annotations.csv"
    text = static.read_text()
    static.write_text(text + "4,0.1,0.2\n")
    with pytest.raises(ValueError, match=r"duplicate song ids \['4'\]"):
        pmemo.read(pmemo_root)
    static.write_text(text.replace("\n4,", "\n4,abc,", 1))
    with pytest.raises(ValueError, match=r"static_annotations.csv, line 3, 'Arousal\(mean\)': 'abc' is not a number"):
        pmemo.read(pmemo_root)
    for bad in ("nan", "inf"):  # float() takes both; a NaN label would be skipped by every loss, an inf one poisons it
        static.write_text(text.replace("\n4,", f"\n4,{bad},", 1))
        with pytest.raises(ValueError, match=rf"line 3, 'Arousal\(mean\)': '{bad}' is not a finite number"):
            pmemo.read(pmemo_root)
    static.write_text(text.replace("\n4,", "\n4,1.5,", 1))
    with pytest.raises(ValueError, match=r"song 4's static .* 1.5 is off its annotation file's 0-1 scale"):
        pmemo.read(pmemo_root)
    static.write_text(text + "5,0.3\n")  # a row cut short
    with pytest.raises(ValueError, match=r", 'Valence\(mean\)': no value \(the row is shorter than the header\)"):
        pmemo.read(pmemo_root)
    static.write_text("id,a,v\n1,0.1,0.2\n")
    with pytest.raises(ValueError, match="neither the original"):
        pmemo.read(pmemo_root)
    static.write_text(text)
    (pmemo_root / "metadata.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"PMEmo: .*metadata\.csv"):
        pmemo.read(pmemo_root)


def test_split_lists_naming_unannotated_songs_are_refused(pmemo_root, tmp_path_factory):
    splits = tmp_path_factory.mktemp("splits")
    for name, ids in (("train", "4\n99999\n"), ("validation", "1\n"), ("test", "5\n")):
        (splits / f"{name}.txt").write_text(ids)
    with pytest.raises(ValueError, match="song 99999 is not in the PMEmo annotations"):
        pmemo.read(pmemo_root, splits_dir=splits)
