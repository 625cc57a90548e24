"""CAL500 readers: the UCSD layout written in its documented schema (no real per-annotator files exist here), and
the real MULAN ARFF release."""

from __future__ import annotations

import pytest

from music2emo_hf.data import cal500
from music2emo_hf.labels import CAL500_EMOTIONS
from tests.conftest import require_fixtures

# Two annotators of song one, three of song two, in CAL500_EMOTIONS order.
ONE = ([1, 2, 1, 3, 5, 4, 5, 2, 5, 5, 2, 1, 4, 3, 2, 1, 3, 1], [1, 2, 1, 5, 5, 4, 3, 2, 4, 5, 2, 1, 4, 3, 2, 1, 3, 1])
ONE_MEANS = [1, 2, 1, 4, 5, 4, 4, 2, 4.5, 5, 2, 1, 4, 3, 2, 1, 3, 1]
TWO = tuple([2] * 15 + [sad, 3, 2] for sad in (4, 4, 3))
SONGS = ("abba-dancing_queen", "nick_drake-pink_moon", "tom_waits-no_files")
# As the UCSD files spell the concepts: one of them "Agressive" (the MULAN ARFF inherits it).
UCSD_NAMES = [name.replace("Aggressive", "Agressive") for name in CAL500_EMOTIONS]


def annotator_file(ratings):
    lines = ['Genre-Best-Rock="1"', 'Instrument_-_Male_Lead_Vocals="2"']
    lines += [f'Emotion-{name}="{value}"' for name, value in zip(UCSD_NAMES, ratings)]
    return "\n".join(lines) + "\n"


@pytest.fixture
def ucsd_root(tmp_path):
    (tmp_path / "songNames.txt").write_text("\n".join(SONGS) + "\n")
    vocab = [f"Emotion-{name}" for name in UCSD_NAMES] + [f"NOT-Emotion-{name}" for name in UCSD_NAMES]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab + ["Genre-Best-Rock"]) + "\n")
    (tmp_path / "annotations").mkdir()
    for song, annotators in zip(SONGS, (ONE, TWO)):
        for number, ratings in enumerate(annotators, 1):
            (tmp_path / "annotations" / f"{song}_{number:02d}.txt").write_text(annotator_file(ratings))
    (tmp_path / "mp3").mkdir()
    (tmp_path / "mp3" / f"{SONGS[0]}.mp3").write_bytes(b"not decoded")
    return tmp_path


def test_ucsd_means_all_18_concepts_and_the_papers_rule(ucsd_root):
    one, two, three = cal500.read(ucsd_root)
    assert [t.track_id for t in (one, two, three)] == list(SONGS)
    assert one.mood_targets == ONE_MEANS and one.extra == {"annotators": 2}
    assert one.audio == str((ucsd_root / "mp3" / f"{SONGS[0]}.mp3").resolve())
    # Means above 4 exist: the 5 highest, Laid-back / Mellow (mean 5) included; 4-way tie at 4 broken by vocab order.
    assert one.moods == [
        "Carefree_/_Lighthearted", "Laid-back_/_Mellow", "Happy", "Calming_/_Soothing", "Cheerful_/_Festive",
    ]
    assert two.mood_targets[15] == pytest.approx(11 / 3) and two.extra == {"annotators": 3}
    assert two.moods == ["Sad"] and two.audio is None  # nothing above 4: the argmax only
    assert (three.mood_targets, three.moods, three.audio, three.extra) == (None, [], None, {"annotators": 0})


def test_a_concept_an_annotator_left_out_is_the_mean_of_those_who_rated_it(ucsd_root):
    second = ucsd_root / "annotations" / f"{SONGS[0]}_02.txt"
    second.write_text("".join(line for line in second.read_text().splitlines(keepends=True)
                              if not line.startswith(f"Emotion-{UCSD_NAMES[8]}=")))
    one = cal500.read(ucsd_root)[0]
    assert one.mood_targets[8] == ONE[0][8] == 5  # not (5 + 0) / 2: the second annotator gave no rating
    assert one.mood_targets[:8] == ONE_MEANS[:8] and one.mood_targets[9:] == ONE_MEANS[9:]


def test_ucsd_files_with_the_corrected_spelling_read_the_same(ucsd_root):
    before = cal500.read(ucsd_root)
    for path in [ucsd_root / "vocab.txt", *(ucsd_root / "annotations").iterdir()]:
        path.write_text(path.read_text().replace("Agressive", "Aggressive"))
    assert [track.mood_targets for track in cal500.read(ucsd_root)] == [track.mood_targets for track in before]


def test_ucsd_threshold_rule(ucsd_root):
    one, two, _ = cal500.read(ucsd_root, rule="threshold", threshold=4.5)
    assert one.moods == ["Carefree_/_Lighthearted", "Laid-back_/_Mellow", "Happy"] and two.moods == []
    one, two, _ = cal500.read(ucsd_root, rule="threshold", threshold=3)
    assert len(one.moods) == 9 and two.moods == ["Sad", "Tender_/_Soft"]
    with pytest.raises(ValueError, match="needs `threshold`"):
        cal500.read(ucsd_root, rule="threshold")
    with pytest.raises(ValueError, match="unknown label rule"):
        cal500.read(ucsd_root, rule="top3")


def test_ucsd_errors(ucsd_root):
    bad = ucsd_root / "annotations" / f"{SONGS[1]}_02.txt"
    bad.write_text(annotator_file(TWO[1]).replace('Emotion-Sad="4"', "Emotion-Sad=4"))
    with pytest.raises(ValueError, match=rf"{bad.name} line 18"):
        cal500.read(ucsd_root)
    bad.write_text(annotator_file(TWO[1]).replace('Emotion-Sad="4"', 'Emotion-Sad="nan"'))
    with pytest.raises(ValueError, match=rf"{bad.name} line 18: rating is not a finite number"):
        cal500.read(ucsd_root)  # a NaN would void the song's mean of the other annotators' ratings
    bad.write_text(annotator_file(TWO[1]) + 'Emotion-Gloomy="2"\n')
    with pytest.raises(ValueError, match=rf"{bad.name} line 21"):
        cal500.read(ucsd_root)
    bad.unlink()
    (ucsd_root / "annotations" / "unknown-song_01.txt").write_text(annotator_file(TWO[0]))
    with pytest.raises(ValueError, match="unknown-song_01.txt"):
        cal500.read(ucsd_root)
    (ucsd_root / "songNames.txt").write_text("\n".join(SONGS + SONGS[:1]))
    with pytest.raises(ValueError, match=rf"duplicate song names \['{SONGS[0]}'\]"):
        cal500.read(ucsd_root)
    (ucsd_root / "songNames.txt").write_bytes("\n".join(SONGS).encode() + b"\nbeyonc\xe9-halo\n")  # Latin-1
    with pytest.raises(ValueError, match=r"songNames\.txt: not UTF-8 text \(byte .*save it as UTF-8"):
        cal500.read(ucsd_root)
    (ucsd_root / "songNames.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"CAL500: .*songNames\.txt"):
        cal500.read(ucsd_root)


def test_mulan_arff_release():
    features, labels, ids = cal500.read_arff(require_fixtures("cal500", "CAL500.orig.arff"))
    assert features.shape == (502, 68) and labels.shape == (502, 18) and ids[:2] == ["0", "1"] and len(ids) == 502
    assert features[0, :3].tolist() == [0.08254, 0.048394, 0.322451] and features[-1, -1] == 0.171373
    # Row 0's 36 emotion values, positive columns only: Calming, Emotional, Laid-back, Pleasant, Tender, Touching.
    positive = [CAL500_EMOTIONS[i] for i in labels[0].nonzero()[0]]
    assert positive == [
        "Calming_/_Soothing", "Emotional_/_Passionate", "Laid-back_/_Mellow",
        "Pleasant_/_Comfortable", "Tender_/_Soft", "Touching_/_Loving",
    ]
    # Positives per concept; Angry (48) comes from the misspelt, unprefixed `Angry-Agressive` column.
    per_concept = [48, 154, 22, 148, 109, 107, 160, 117, 135, 109, 92, 76, 184, 120, 160, 58, 104, 75]
    assert labels.sum(axis=0).tolist() == per_concept


def test_arff_errors(tmp_path):
    text = require_fixtures("cal500", "CAL500.orig.arff").read_text()
    short = tmp_path / "short.arff"
    lines = text.splitlines()
    data_line = lines.index("@data") + 1  # index of the first data row
    lines[data_line + 2] = lines[data_line + 2].rsplit(",", 1)[0]
    short.write_text("\n".join(lines))
    with pytest.raises(ValueError, match=rf"short.arff line {data_line + 3}: 241 values, expected 242"):
        cal500.read_arff(short)
    with pytest.raises(FileNotFoundError, match="CAL500"):
        cal500.read_arff(tmp_path / "absent.arff")
