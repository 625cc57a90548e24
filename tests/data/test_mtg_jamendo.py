"""MTG-Jamendo moodtheme reader on the real metadata and split files, in the official download layout."""

from __future__ import annotations

import numpy as np
import pytest

from music2emo_hf.data import mtg_jamendo
from music2emo_hf.labels import MTG_JAMENDO_MOODS
from tests.conftest import require_fixtures


@pytest.fixture
def download(tmp_path):
    """data/ and audio/48/948.mp3 symlinked into a tmp root laid out like the download."""
    data = require_fixtures("mtg_jamendo", "data")
    (tmp_path / "data").symlink_to(data, target_is_directory=True)
    (tmp_path / "audio" / "48").mkdir(parents=True)
    (tmp_path / "audio" / "48" / "948.mp3").symlink_to(require_fixtures("mtg_jamendo", "audio", "48", "948.mp3"))
    return tmp_path


def test_real_metadata_and_split_0(download):
    tracks = mtg_jamendo.read(download)
    assert len(tracks) == 18486
    splits = [t.split for t in tracks]
    assert (splits.count("train"), splits.count("validation"), splits.count("test")) == (9949, 3802, 4231)
    assert splits.count(None) == 504  # only ambiental/horror/mellow tags: in no split file
    first = tracks[0]
    assert (first.track_id, first.duration, first.moods, first.split) == ("948", 212.7, ["background"], "train")
    assert first.audio == str(download / "audio" / "48" / "948.mp3")
    assert (first.extra["artist_id"], first.extra["album_id"]) == ("artist_000087", "album_000149")
    assert first.mood_targets[MTG_JAMENDO_MOODS.index("background")] == 1.0 and sum(first.mood_targets) == 1.0
    last = tracks[-1]  # a row with four tag columns after column 6
    assert last.track_id == "1422060" and last.moods == ["advertising", "dramatic", "epic", "movie"]
    assert sum(last.mood_targets) == 4.0 and last.audio is None
    # The split-0 test multi-hot is exactly the MediaEval organisers' ground truth (4231 x 56, 7564 positives).
    truth = np.load(require_fixtures("mtg_jamendo", "results", "mediaeval", "groundtruth.npy"))
    test = np.array([t.mood_targets for t in tracks if t.split == "test"])
    assert test.shape == (4231, 56) and int(test.sum()) == 7564 and np.array_equal(test, truth)
    horror = [t for t in tracks if "horror" in t.extra["other_tags"]]
    assert len(horror) == 158 and all(t.split is None for t in horror if not t.moods)
    assert len({t.track_id for t in tracks}) == len(tracks)


def test_low_quality_audio_variant(download):
    (download / "audio" / "50").mkdir()
    (download / "audio" / "50" / "950.low.mp3").write_bytes(b"")
    tracks = {t.track_id: t for t in mtg_jamendo.read(download)}
    assert tracks["950"].audio == str(download / "audio" / "50" / "950.low.mp3")
    assert tracks["951"].audio is None


def _small(tmp_path, rows, split_rows=None):
    header = "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\r\n"
    (tmp_path / "data" / "splits" / "split-1").mkdir(parents=True)
    (tmp_path / "data" / "autotagging_moodtheme.tsv").write_text(header + "".join(r + "\r\n" for r in rows))
    for name in ("train", "validation", "test"):
        body = "".join(r + "\r\n" for r in (split_rows or {}).get(name, []))
        (tmp_path / "data" / "splits" / "split-1" / f"autotagging_moodtheme-{name}.tsv").write_text(header + body)
    return tmp_path


def test_other_split_and_errors(tmp_path):
    row = "track_0000007\tartist_1\talbum_1\t07/7.mp3\t10.5\tmood/theme---sad\tmood/theme---calm"
    other = "track_0000008\tartist_1\talbum_1\t08/8.mp3\t3\tmood/theme---happy"
    root = _small(tmp_path, [row, other], {"test": [row]})
    tracks = mtg_jamendo.read(root, split=1)
    assert [(t.track_id, t.split, t.moods) for t in tracks] == [("7", "test", ["sad", "calm"]), ("8", None, ["happy"])]
    metadata = root / "data" / "autotagging_moodtheme.tsv"
    metadata.write_bytes(b"\xef\xbb\xbf" + metadata.read_bytes())  # saved by an editor that marks UTF-8
    assert [t.track_id for t in mtg_jamendo.read(root, split=1)] == ["7", "8"]
    with pytest.raises(FileNotFoundError, match="split-0"):
        mtg_jamendo.read(root)
    with pytest.raises(ValueError, match="splits 0..4"):
        mtg_jamendo.read(root, split=5)
    _small(tmp_path / "dup", [row, other, row])
    with pytest.raises(ValueError, match=r"duplicate track ids: 7 \(lines 2 and 4\)"):
        mtg_jamendo.read(tmp_path / "dup", split=1)
    _small(tmp_path / "bad", [row.replace("10.5", "long")])
    with pytest.raises(ValueError, match=r"autotagging_moodtheme.tsv, line 2: DURATION"):
        mtg_jamendo.read(tmp_path / "bad", split=1)
    with pytest.raises(FileNotFoundError, match="autotagging_moodtheme.tsv"):
        mtg_jamendo.read(tmp_path / "nowhere")
