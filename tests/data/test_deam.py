"""DEAM reader on the real static files, in the official folders and flat."""

from __future__ import annotations

import shutil

import pytest

from music2emo_hf.data import deam
from tests.conftest import require_fixtures

FILES = deam.STATIC_FILES


@pytest.fixture
def download(tmp_path):
    folder = tmp_path / deam.STATIC_DIR
    folder.mkdir(parents=True)
    for name in FILES:
        (folder / name).symlink_to(require_fixtures("deam", name))
    (tmp_path / "MEMD_audio").mkdir()
    shutil.copy(require_fixtures("emomusic", "audio", "3.mp3"), tmp_path / "MEMD_audio" / "3.mp3")
    return tmp_path


def test_real_static_files(download):
    tracks = {t.track_id: t for t in deam.read(download)}
    assert len(tracks) == 1744 + 58
    two = tracks["2"]
    assert (two.valence, two.arousal, two.extra["valence_std"]) == (3.1, 3.0, 0.94)
    assert two.valence_normalized == pytest.approx(-0.475) and two.arousal_normalized == pytest.approx(-0.5)
    assert two.split is None and two.audio is None and two.duration is None and two.valence_series is None
    assert tracks["3"].audio == str(download / "MEMD_audio" / "3.mp3")
    last = tracks["2058"]  # the 13-column file; `valence_ max_mean` read as valence_max_mean
    assert (last.valence, last.arousal, last.extra["valence_max_mean"], last.extra["arousal_min_std"]) == (
        3.8, 5.8, 4.6, 1.17)


def test_music2emo_splits_and_flat_layout(download, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in FILES:
        (flat / name).symlink_to(require_fixtures("deam", name))
    tracks = deam.read(flat, splits_dir=require_fixtures("music2emo_meta", "deam"))
    splits = [t.split for t in tracks]
    assert (splits.count("train"), splits.count("validation"), splits.count("test"), len(tracks)) == (
        1261, 271, 270, 1802)
    assert {t.split for t in deam.read(flat, split="train")} == {"train"}


def test_dynamic_series(download):
    folder = download / deam.DYNAMIC_DIR
    folder.mkdir(parents=True)
    header = "song_id,sample_15000ms,sample_15500ms,sample_16000ms\r\n"
    (folder / "valence.csv").write_text(header + "2,0.1,0.2,0.3\r\n3,-0.5,,\r\n")
    (folder / "arousal.csv").write_text(header + "2,0.4,0.5,0.6\r\n")
    tracks = {t.track_id: t for t in deam.read(download)}
    assert tracks["2"].valence_series == [0.1, 0.2, 0.3] and tracks["2"].arousal_series == [0.4, 0.5, 0.6]
    assert tracks["3"].valence_series == [-0.5] and tracks["3"].arousal_series is None
    assert (tracks["2"].series_start, tracks["2"].series_hop) == (15.0, 0.5)
    (folder / "arousal.csv").write_text("song_id,sample_15000ms,sample_16000ms\r\n")
    with pytest.raises(ValueError, match="arousal.csv, line 1"):
        deam.read(download)


def test_errors(download, tmp_path):
    with pytest.raises(FileNotFoundError, match="DEAM: expected file .*static_annotations_averaged_songs_1_2000"):
        deam.read(tmp_path / "nowhere")
    folder = download / deam.STATIC_DIR
    (folder / FILES[1]).unlink()
    (folder / FILES[1]).write_text("song_id, valence_mean, arousal_mean\r\n5,1,2\r\n2,3,4\r\n")
    with pytest.raises(ValueError, match=r"duplicate song ids: 5 .*line 2\), 2 .*line 3\)"):
        deam.read(download)
    (folder / FILES[1]).write_text("song_id, valence_mean, arousal_mean\r\n2100,1,2\r\n2101,x,1\r\n")
    with pytest.raises(ValueError, match="2000_2058.csv, line 3: 'x' is not a number"):
        deam.read(download)
    (folder / FILES[1]).write_text("song_id, valence_mean, arousal_mean\r\n2100,1,2\r\n2101,31,1\r\n")
    with pytest.raises(ValueError, match="song 2101's static valence 31.0 is off its annotation file's 1-9 scale"):
        deam.read(download)
    (folder / FILES[1]).write_text("arousal_mean, song_id, valence_mean\r\n2.5,2100,1\r\n")  # columns by name
    assert [(t.valence, t.arousal) for t in deam.read(download) if t.track_id == "2100"] == [(1.0, 2.5)]
    (folder / FILES[1]).write_bytes("song_id, valence_mean, arousal_mean\r\n2100,1,2\r\n".encode("utf-16"))
    with pytest.raises(ValueError, match=r"2000_2058.csv: not UTF-8 text \(byte 0: .*save it as UTF-8"):
        deam.read(download)
    (folder / FILES[1]).unlink()
    (folder / FILES[1]).symlink_to(require_fixtures("deam", FILES[1]))
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "train.txt").write_text("2\n99999\n")
    with pytest.raises(FileNotFoundError, match="validation.txt"):
        deam.read(download, splits_dir=splits)
    (splits / "validation.txt").write_text("")
    (splits / "test.txt").write_text("")
    with pytest.raises(ValueError, match="train.txt, line 2: song 99999 is not in the DEAM annotations"):
        deam.read(download, splits_dir=splits)
