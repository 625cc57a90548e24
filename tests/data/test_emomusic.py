"""EmoMusic reader on the real annotation files and clips, in the official download layout."""

from __future__ import annotations

import pytest

from music2emo_hf.data import emomusic
from tests.conftest import require_fixtures

CSVS = ("static_annotations.csv", "songs_info.csv", "valence_cont_average.csv", "arousal_cont_average.csv")


@pytest.fixture
def download(tmp_path):
    for name in CSVS:
        (tmp_path / name).symlink_to(require_fixtures("emomusic", name))
    (tmp_path / "clips_45seconds").mkdir()
    for song in (3, 4, 7, 8, 10, 17):
        (tmp_path / "clips_45seconds" / f"{song}.mp3").symlink_to(require_fixtures("emomusic", "audio", f"{song}.mp3"))
    return tmp_path


def test_real_files_and_official_split(download):
    tracks = {t.track_id: t for t in emomusic.read(download)}
    assert len(tracks) == 744
    splits = [t.split for t in tracks.values()]
    assert (splits.count("train"), splits.count("test")) == (619, 125)
    two = tracks["2"]
    assert (two.valence, two.arousal, two.split, two.duration) == (3.0, 3.1, "train", 45.0)
    assert two.valence_normalized == pytest.approx(-0.5) and two.arousal_normalized == pytest.approx(-0.475)
    assert two.extra["genre"] == "Blues" and two.extra["title"] == "Tonight  A Lonely Century"
    assert two.extra["artist"] == "The New Mystikal Troubadours" and two.audio is None
    assert len(two.valence_series) == len(two.arousal_series) == 61
    assert two.valence_series[0] == -0.0733412307857912 and two.arousal_series[0] == -0.109387732373192
    assert (two.series_start, two.series_hop) == (15.0, 0.5)
    assert tracks["3"].split == "test" and tracks["3"].audio == str(download / "clips_45seconds" / "3.mp3")
    assert tracks["17"].extra["segment_start"] == 130.0  # '2.1' is 2 min 10 s
    assert sum(t.audio is not None for t in tracks.values()) == 6
    assert {t.duration for t in tracks.values()} == {45.0}


def test_a_song_with_dynamic_labels_only_is_kept_without_static_ones(download):
    """The real static file less song 2's row: its 2 Hz series still label it (static valence/arousal None)."""
    static = download / "static_annotations.csv"
    rows = static.read_text().splitlines(keepends=True)
    static.unlink()
    static.write_text("".join(row for row in rows if not row.startswith("2,")))
    tracks = {t.track_id: t for t in emomusic.read(download)}
    assert len(tracks) == 744 and (tracks["2"].valence, tracks["2"].arousal) == (None, None)
    assert len(tracks["2"].valence_series) == len(tracks["2"].arousal_series) == 61
    assert (tracks["2"].series_start, tracks["2"].series_hop) == (15.0, 0.5) and tracks["3"].valence == 3.3


def test_music2emo_splits_override(download):
    tracks = emomusic.read(download, splits_dir=require_fixtures("music2emo_meta", "emomusic"))
    splits = [t.split for t in tracks]
    assert (splits.count("train"), splits.count("validation"), splits.count("test")) == (495, 124, 125)


def test_errors(download, tmp_path):
    (download / "songs_info.csv").unlink()
    with pytest.raises(FileNotFoundError, match="EmoMusic: expected file .*songs_info.csv"):
        emomusic.read(download)
    info = '"song_id","file_name","Mediaeval 2013 set"\n2,"\t2.mp3","development"\n3,"\t3.mp3","later"\n'
    (download / "songs_info.csv").write_text(info)
    with pytest.raises(ValueError, match="songs_info.csv, line 3: Mediaeval 2013 set 'later'"):
        emomusic.read(download)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "songs_info.csv").write_text(info.replace("later", "evaluation"))
    static = "song_id,mean_arousal,std_arousal,mean_valence,std_valence\n2,1,0,2,0\n3,1,0,2,0\n2,5,0,5,0\n"
    (bad / "static_annotations.csv").write_text(static)
    with pytest.raises(ValueError, match=r"duplicate song ids: 2 \(line 4\)"):
        emomusic.read(bad)
    (bad / "static_annotations.csv").write_text(static.replace("2,5,0,5,0", "4,5,0"))
    with pytest.raises(ValueError, match="static_annotations.csv, line 4: 3 columns"):
        emomusic.read(bad)


def test_the_songs_deam_shares_have_valence_and_arousal_swapped_and_leak_its_test_set(download, tmp_path):
    """docs/datasets.md's figures ("Known problems of the corpora"), from the real annotation files of both."""
    import numpy as np

    from music2emo_hf.data import deam
    from music2emo_hf.data.prepare import PrepareOptions, _split

    flat = tmp_path / "deam"
    flat.mkdir()
    for name in deam.STATIC_FILES:
        (flat / name).symlink_to(require_fixtures("deam", name))
    ours, theirs = {t.track_id: t for t in emomusic.read(download)}, {t.track_id: t for t in deam.read(flat)}
    shared = sorted(set(ours) & set(theirs), key=int)
    assert len(shared) == 744
    swapped = [i for i in shared if (theirs[i].valence, theirs[i].arousal) == (ours[i].arousal, ours[i].valence)
               and ours[i].valence != ours[i].arousal]
    assert len(swapped) == 708
    assert (theirs["5"].valence, theirs["5"].arousal, ours["5"].valence, ours["5"].arousal) == (4.4, 5.3, 5.3, 4.4)

    def correlation(x, y) -> float:
        return round(float(np.corrcoef(x, y)[0, 1]), 3)

    rated = [i for i in shared if ours[i].valence_series and ours[i].arousal_series]
    moment = {name: [float(np.mean(getattr(ours[i], f"{name}_series"))) for i in rated] for name in ("valence", "arousal")}
    assert correlation([ours[i].valence for i in rated], moment["valence"]) == 0.950
    assert correlation([ours[i].valence for i in rated], moment["arousal"]) == 0.570
    assert correlation([theirs[i].valence for i in rated], moment["arousal"]) == 0.956

    test = {i for i, t in ours.items() if t.split == "test"}
    _split("deam", list(theirs.values()), PrepareOptions())  # this package's default, seeded split
    assert len(test) == 125 and len({i for i in test if theirs[i].split == "train"}) == 102
    lists = {t.track_id: t.split for t in deam.read(flat, splits_dir=require_fixtures("music2emo_meta", "deam"))}
    assert len({i for i in test if lists.get(i) == "train"}) == 82  # Music2Emo's own lists
