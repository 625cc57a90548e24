"""Emotify reader on a small data.csv written in the original schema (the real file is not available here), plus a
check of the conventions against the real processed labels of the cross-dataset paper."""

from __future__ import annotations

import json

import pytest

from music2emo_hf.data import emotify
from music2emo_hf.labels import EMOTIFY_GEMS
from tests.conftest import require_fixtures

HEADER = (
    "track id, genre, amazement, solemnity, tenderness, nostalgia, calmness, power, joyful_activation, tension, "
    "sadness, mood, liked, disliked, age, gender, mother tongue"
)
# One row per listener vote, tracks interleaved: classical 1 (4 listeners), rock 101 (2), pop 301 (1).
ROWS = [
    "1,classical,0,1,1,0,1,0,0,0,0,3,1,0,25,1,English",
    "101,rock,0,0,0,0,0,1,0,1,0,4,0,0,31,0,Dutch",
    "1, classical, 0, 1, 0, 0, 1, 0, 0, 0, 1, 2, 0, 1, 40, 0, Dutch",
    "1,classical,0,0,1,0,1,0,0,0,1,2,0,0,19,1,English",
    "301,pop,0,0,0,0,0,0,1,0,0,5,1,0,22,1,Spanish",
    "101,rock,0,0,0,0,0,1,0,0,0,3,1,0,28,0,English",
    "1,classical,1,0,0,0,1,0,0,0,0,4,1,0,33,0,English",
]


@pytest.fixture
def emotify_root(tmp_path):
    (tmp_path / "data.csv").write_text("\n".join([HEADER] + ROWS) + "\n")
    (tmp_path / "pop").mkdir()
    (tmp_path / "pop" / "1.mp3").write_bytes(b"not decoded")  # track 301 = pop/1 (files restart per genre)
    (tmp_path / "rock").mkdir()
    (tmp_path / "rock" / "101.mp3").write_bytes(b"not track 101's file")
    return tmp_path


def test_vote_shares_and_top3(emotify_root):
    classical, rock, pop = emotify.read(emotify_root)
    assert [t.track_id for t in (classical, rock, pop)] == ["classical/1", "rock/101", "pop/301"]
    assert classical.mood_targets == [0.25, 0.5, 0.5, 0, 1, 0, 0, 0, 0.5]
    assert classical.extra == {"genre": "classical", "id": "1", "listeners": 4}
    # calmness 4 votes; solemnity, tenderness and sadness tie at 2: column order keeps the first two.
    assert classical.moods == ["calmness", "solemnity", "tenderness"]
    assert rock.mood_targets == [0, 0, 0, 0, 0, 1, 0, 0.5, 0] and rock.moods == ["power", "tension"]  # no 0-vote fill
    assert pop.moods == ["joyful_activation"] and pop.corpus == "emotify"
    assert pop.audio == str((emotify_root / "pop" / "1.mp3").resolve())
    assert classical.audio is None and rock.audio is None  # labelled, no audio (rock/1.mp3 absent): kept
    assert classical.split is None and classical.duration is None


def test_vote_share_rule(emotify_root):
    classical, rock, pop = emotify.read(emotify_root, rule="vote_share", min_share=0.5)
    assert classical.moods == ["calmness", "solemnity", "tenderness", "sadness"]
    assert rock.moods == ["power", "tension"] and pop.moods == ["joyful_activation"]
    classical, rock, _ = emotify.read(emotify_root, rule="vote_share", min_share=0.6)
    assert classical.moods == ["calmness"] and rock.moods == ["power"]
    for share in (None, 0, 1.5):
        with pytest.raises(ValueError, match=r"needs a share of listeners in \(0, 1\] \(--threshold\)"):
            emotify.read(emotify_root, rule="vote_share", min_share=share)
    with pytest.raises(ValueError, match="unknown label rule"):
        emotify.read(emotify_root, rule="top5")


def test_errors(emotify_root):
    data = emotify_root / "data.csv"
    data.write_text("\n".join([HEADER] + ROWS[:3] + [ROWS[3].replace(",0,1,0,0,0,1,", ",0,2,0,0,0,1,", 1)]))
    with pytest.raises(ValueError, match=r"data\.csv line 5"):
        emotify.read(emotify_root)
    data.write_text("\n".join([HEADER] + ROWS[:1] + [ROWS[1].rsplit(",", 1)[0]]))
    with pytest.raises(ValueError, match=r"data\.csv line 3: 16 fields, expected 17"):
        emotify.read(emotify_root)
    data.write_text("\n".join([HEADER, "x1" + ROWS[0][1:]]))
    with pytest.raises(ValueError, match="track id 'x1' is not a positive integer"):
        emotify.read(emotify_root)
    data.write_text("\n".join([HEADER.replace(" sadness,", " sorrow,")] + ROWS))
    with pytest.raises(ValueError, match=r"lacks the columns \['sadness'\]"):
        emotify.read(emotify_root)
    data.unlink()
    with pytest.raises(FileNotFoundError, match=r"Emotify: .*data\.csv"):
        emotify.read(emotify_root)


def test_conventions_match_the_real_processed_labels():
    """The real top-3 labels use exactly the GEMS vocabulary, three distinct labels per track, keyed "<id>,<genre>"
    with ids 1-400 and audio at "<genre>/<(id - 1) % 100 + 1>.wav": the file numbering the reader assumes."""
    labels = json.loads(require_fixtures("emotify", "emotify_metadata_top3.json").read_text())
    assert len(labels) == 400
    assert {label for entry in labels.values() for label in entry["mood/theme"]} == set(EMOTIFY_GEMS)
    assert all(len(set(entry["mood/theme"])) == 3 for entry in labels.values())
    for key, entry in labels.items():
        track, genre = key.split(",")
        assert entry["path"].endswith(f"/{genre}/{(int(track) - 1) % 100 + 1}.wav")
    assert sorted(int(key.split(",")[0]) for key in labels) == list(range(1, 401))
