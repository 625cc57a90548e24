"""`music2emo prepare-data`: real annotation files -> Parquet + card -> `datasets.load_dataset`, the report, resuming,
and publishing (with `HfApi` intercepted)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest

from music2emo_hf.cli import main
from music2emo_hf.data import READERS, prepare
from music2emo_hf.data.layout import AudioSources
from music2emo_hf.label_alignment import LabelClusters
from tests.conftest import require_fixtures, without_root_reading_rights
from tests.data.test_cal500 import ONE, SONGS, TWO, annotator_file
from tests.data.test_emotify import HEADER as EMOTIFY_HEADER
from tests.data.test_emotify import ROWS as EMOTIFY_ROWS

EMOMUSIC_CSVS = ("static_annotations.csv", "songs_info.csv", "valence_cont_average.csv", "arousal_cont_average.csv")


def emomusic_download(root: Path) -> Path:
    """The official layout with three real clips, plus planted problems: song 5's file is not audio, a recording
    nobody labelled, and the AppleDouble file macOS writes beside a copied one."""
    root.mkdir(parents=True)
    for name in EMOMUSIC_CSVS:
        (root / name).symlink_to(require_fixtures("emomusic", name))
    clips = root / "clips_45seconds"
    clips.mkdir()
    for song in (3, 4, 7):
        shutil.copy(require_fixtures("emomusic", "audio", f"{song}.mp3"), clips / f"{song}.mp3")
    (clips / "5.mp3").write_bytes(b"ID3 but then nothing an mp3 decoder accepts")
    shutil.copy(clips / "3.mp3", clips / "outtake.mp3")
    (clips / "._3.mp3").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")  # macOS's companion: not listed
    return root


@pytest.fixture
def downloads(tmp_path) -> dict[str, Path]:
    """Every corpus in its official layout: real annotation files where the fixtures hold them, schema-true files
    (CAL500 UCSD, Emotify data.csv) where they do not."""
    fixtures = require_fixtures()
    roots = {corpus: tmp_path / "downloads" / corpus for corpus in READERS}
    emomusic_download(roots["emomusic"])

    mtg = roots["mtg_jamendo"]
    (mtg / "audio" / "48").mkdir(parents=True)
    (mtg / "data").symlink_to(fixtures / "mtg_jamendo" / "data")
    shutil.copy(fixtures / "mtg_jamendo" / "audio" / "48" / "948.mp3", mtg / "audio" / "48" / "948.mp3")

    roots["deam"].mkdir()
    for name in ("static_annotations_averaged_songs_1_2000.csv", "static_annotations_averaged_songs_2000_2058.csv"):
        (roots["deam"] / name).symlink_to(fixtures / "deam" / name)

    pmemo = roots["pmemo"]
    (pmemo / "annotations").mkdir(parents=True)
    with open(pmemo / "annotations" / "static_annotations.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["musicId", "Arousal(mean)", "Valence(mean)"])
        for song in json.loads((fixtures / "pmemo" / "scatter.json").read_text()):
            writer.writerow([song["id"], song["a"], song["v"]])
    shutil.copy(fixtures / "pmemo" / "metadata.csv", pmemo)

    cal = roots["cal500"]
    (cal / "annotations").mkdir(parents=True)
    (cal / "songNames.txt").write_text("\n".join(SONGS[:2]) + "\n")
    (cal / "vocab.txt").write_text("\n".join(f"Emotion-{n}" for n in prepare.TAG_VOCABULARIES["cal500"]) + "\n")
    for song, annotators in zip(SONGS, (ONE, TWO)):
        for number, ratings in enumerate(annotators, 1):
            (cal / "annotations" / f"{song}_{number:02d}.txt").write_text(annotator_file(ratings))
    (cal / "mp3").mkdir()
    for song in SONGS[:2]:
        (cal / "mp3" / f"{song}.mp3").symlink_to(fixtures / "emomusic" / "audio" / "3.mp3")

    emotify = roots["emotify"]
    emotify.mkdir()
    (emotify / "data.csv").write_text("\n".join([EMOTIFY_HEADER] + EMOTIFY_ROWS) + "\n")
    return roots


def load(out: Path, config: str) -> datasets.DatasetDict:
    return datasets.load_dataset(str(out), config, cache_dir=str(out.parent / "hf-cache"))


@pytest.mark.slow
def test_every_corpus_round_trips_through_load_dataset(downloads, tmp_path):
    out = tmp_path / "benchmark"
    statuses = {corpus: main(["prepare-data", "--corpus", corpus, "--source", str(root), "--out", str(out)])
                for corpus, root in downloads.items()}
    # 1 (some files failed) where the download lacks audio; CAL500's two songs have theirs, so it is clean.
    assert statuses == {"mtg_jamendo": 1, "deam": 1, "pmemo": 1, "emomusic": 1, "cal500": 0, "emotify": 1}
    clusters = LabelClusters.from_dict(json.loads((out / "label_clusters.json").read_text()))
    total = 0
    for corpus, root in downloads.items():
        loaded = load(out, corpus)
        rows = {row["track_id"]: row for split in loaded.values() for row in split}
        tracks = {t.track_id: t for t in READERS[corpus](root)}
        in_splits = {i for i, t in tracks.items() if t.split is not None} if corpus == "mtg_jamendo" else set(tracks)
        assert set(rows) == in_splits, corpus
        total += len(rows)
        for track_id in list(rows)[:50]:
            row, track = rows[track_id], tracks[track_id]
            assert row["moods"] == track.moods and row["corpus"] == corpus
            assert row["valence"] == track.valence and row["valence_normalized"] == track.valence_normalized
            assert row["mood_targets"] == track.mood_targets
            assert json.loads(row["extra"]) == json.loads(json.dumps(track.extra))
            assert row["label_clusters"] == sorted({clusters.cluster_of(corpus, m) for m in track.moods})
        if corpus == "mtg_jamendo":
            assert {split: len(part) for split, part in loaded.items()} == {"train": 9949, "validation": 3802, "test": 4231}
            assert rows["948"]["audio"] == "audio/48/948.mp3"
            report = json.loads((out / "reports" / "mtg_jamendo.json").read_text())
            assert len(report["missing_audio"]) == len(rows) - 1  # rows written; tracks in no split are not probed
            assert report["not_in_any_split"] and not set(report["not_in_any_split"]) & set(report["missing_audio"])
            assert Path(AudioSources(out).resolve(corpus, rows["948"]["audio"])).is_file()
        else:
            assert set(loaded) <= {"train", "validation", "test"}
    aligned = load(out, "aligned")
    assert sum(len(part) for part in aligned.values()) == total
    sad = clusters.cluster_of("mtg_jamendo", "sad")
    sad_rows = aligned["train"].filter(lambda row: sad in row["label_clusters"])
    assert {"mtg_jamendo", "cal500", "emotify"} >= set(sad_rows["corpus"]) >= {"mtg_jamendo"}
    card = (out / "README.md").read_text()
    assert "config_name: aligned" in card and "config_name: pmemo" in card and "melancholic, sad, sadness" in card


def test_a_download_named_relative_to_here_is_found_from_anywhere_and_read_anew_when_its_files_change(
        downloads, tmp_path, monkeypatch):
    """CAL500 prepared with `--source cal500` from the downloads' folder: sources.json records where that is, so the
    audio is found from another folder; `load_dataset(out)` with no config gives the label-aligned rows; each row
    has its measured duration. A file cut short makes the run exit 1; the file downloaded again (another size and
    time), the next run probes it anew and exits 0."""
    out = tmp_path / "out"
    song = downloads["cal500"] / "mp3" / f"{SONGS[0]}.mp3"
    whole = song.read_bytes()
    song.unlink()
    song.write_bytes(whole[: len(whole) // 3])  # a download that stopped
    monkeypatch.chdir(downloads["cal500"].parent)
    assert main(["prepare-data", "--corpus", "cal500", "--source", "cal500", "--out", str(out)]) == 1
    assert [entry["path"] for entry in json.loads((out / "reports" / "cal500.json").read_text())["cut_short_audio"]] \
        == [f"mp3/{song.name}"]
    song.write_bytes(whole)
    assert main(["prepare-data", "--corpus", "cal500", "--source", "cal500", "--out", str(out)]) == 0
    report = json.loads((out / "reports" / "cal500.json").read_text())
    assert report["cut_short_audio"] == [] and report["unreadable_audio"] == []
    monkeypatch.chdir(tmp_path)
    rows = [row for split in load(out, None).values() for row in split]
    assert sorted(row["track_id"] for row in rows) == sorted(
        row["track_id"] for split in load(out, "cal500").values() for row in split) and len(rows) == 2
    for row in rows:
        assert Path(AudioSources(out).resolve("cal500", row["audio"])).is_file()
        assert row["duration"] == pytest.approx(45, abs=0.5)


def test_report_lists_every_planted_bad_file(tmp_path, capsys):
    root = emomusic_download(tmp_path / "emomusic")
    whole = (root / "clips_45seconds" / "7.mp3").read_bytes()
    (root / "clips_45seconds" / "7.mp3").write_bytes(whole[: len(whole) // 3])  # a download that stopped
    out = tmp_path / "out"
    status = main(["prepare-data", "--corpus", "emomusic", "--source", str(root), "--out", str(out)])
    assert status == 1
    report = json.loads((out / "reports" / "emomusic.json").read_text())
    assert report["unreadable_audio"][0]["path"] == "clips_45seconds/5.mp3"
    assert [u["track_id"] for u in report["unreadable_audio"]] == ["5"]
    assert report["audio_without_labels"] == ["clips_45seconds/outtake.mp3"]
    assert len(report["missing_audio"]) == 744 - 4 and "3" not in report["missing_audio"]
    assert report["rows_per_split"] == {"train": 556, "validation": 63, "test": 125}
    printed = capsys.readouterr().err
    assert report["unreadable_audio"][0]["error"] == (
        "not audio: it could not be decoded as any supported format (WAV, FLAC, Ogg Vorbis/Opus, MP3, AIFF, W64, RF64, "
        "CAF, AU).")
    assert "clips_45seconds/5.mp3 (not audio: it could not" in printed and "clips_45seconds/outtake.mp3" in printed
    cut = "its header announces 45.0 s of audio and the file ends before that"
    assert report["cut_short_audio"] == [{"track_id": "7", "path": "clips_45seconds/7.mp3", "error": cut}]
    assert f"audio files cut short (rows kept; the audio is read as far as it goes): 1: clips_45seconds/7.mp3 ({cut})" \
        in printed
    merges = printed[printed.index("label alignment (new"):]
    assert "melancholic (mtg_jamendo), sad (mtg_jamendo), Sad (cal500), sadness (emotify)" in merges
    rows = {row["track_id"]: row for split in load(out, "emomusic").values() for row in split}
    assert rows["5"]["audio"] is None  # kept, labels and all, but not pointing at a broken file
    assert rows["3"]["audio"] == "clips_45seconds/3.mp3" and rows["3"]["duration"] == pytest.approx(45, abs=0.5)
    assert rows["7"]["audio"] == "clips_45seconds/7.mp3"


def test_an_out_folder_this_user_cannot_write_is_refused_before_the_audio_is_read(tmp_path):
    """It failed at the first write, as "PermissionError: [Errno 13] Permission denied"."""
    prefix = without_root_reading_rights()
    root = emomusic_download(tmp_path / "emomusic")
    (tmp_path / "shared").mkdir(mode=0o555)
    done = subprocess.run([*prefix, sys.executable, "-m", "music2emo_hf.cli", "prepare-data", "--corpus", "emomusic",
                           "--source", str(root), "--out", str(tmp_path / "shared" / "out")],
                          capture_output=True, text=True)
    assert done.returncode == 2, done.stderr[-2000:]
    assert (f"music2emo: error: {tmp_path / 'shared' / 'out'}: cannot write there ({tmp_path / 'shared'} is not "
            "writable by this user); name a folder you can write with --out.") in done.stderr


def test_audio_moved_out_of_the_layout_is_pointed_at(tmp_path, capsys):
    """It was only listed twice: its tracks without audio, and its files without labels."""
    root = emomusic_download(tmp_path / "emomusic")
    (root / "elsewhere").mkdir()
    for song in (3, 4):
        (root / "clips_45seconds" / f"{song}.mp3").rename(root / "elsewhere" / f"{song}.mp3")
    assert main(["prepare-data", "--corpus", "emomusic", "--source", str(root), "--out", str(tmp_path / "out")]) == 1
    assert ("hint: 2 of the tracks without their audio file have a file of their name elsewhere in the download "
            "(track 3: elsewhere/3.mp3): not where the download's own layout puts it (docs/datasets.md); move the "
            "audio back there, or pass the unpacked download itself as --source") in capsys.readouterr().err


def test_audio_nobody_labelled_is_reported_but_a_complete_download_exits_0(tmp_path, capsys):
    """PMEmo's full download has 27 songs in metadata.csv and chorus/ without annotations (here song 11): listed,
    not written, and not a failure."""
    root = tmp_path / "pmemo"
    (root / "annotations").mkdir(parents=True)
    rescaled = require_fixtures("pmemo", "static_annotations_rescaled_1to9.csv").read_text().splitlines()
    (root / "annotations" / "static_annotations.csv").write_text("\n".join(rescaled[:3]) + "\n")  # songs 1 and 4
    shutil.copy(require_fixtures("pmemo", "metadata.csv"), root)
    (root / "chorus").mkdir()
    for song, clip in (("1", "3"), ("4", "4"), ("11", "7")):
        (root / "chorus" / f"{song}.mp3").symlink_to(require_fixtures("emomusic", "audio", f"{clip}.mp3"))
    out = tmp_path / "out"
    assert main(["prepare-data", "--corpus", "pmemo", "--source", str(root), "--out", str(out)]) == 0
    assert json.loads((out / "reports" / "pmemo.json").read_text())["audio_without_labels"] == ["chorus/11.mp3"]
    assert "audio files without labels (not written; not an error): 1: chorus/11.mp3" in capsys.readouterr().err
    assert sorted(row["track_id"] for split in load(out, "pmemo").values() for row in split) == ["1", "4"]


def test_a_corpus_with_no_track_in_a_split_is_refused_and_no_card_names_a_local_path(tmp_path):
    """An empty config would make `load_dataset(out, "emomusic")` answer with the other corpora's rows."""
    root = emomusic_download(tmp_path / "emomusic")
    others = tmp_path / "deam-lists"
    others.mkdir()
    for split in ("train", "validation", "test"):
        (others / f"{split}.txt").write_text("")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="emomusic: none of its 744 tracks is in a split .* nothing was written"):
        prepare.prepare_corpus("emomusic", root, out, prepare.PrepareOptions(splits_dir=str(others)))
    assert not (out / "data" / "emomusic").exists()
    lists = require_fixtures("music2emo_meta", "emomusic")
    prepare.prepare_corpus("emomusic", root, out, prepare.PrepareOptions(splits_dir=str(lists)))
    for published in (out / "README.md", out / "reports" / "emomusic.json"):
        text = published.read_text()
        assert "Music2Emo's published id lists (emomusic/)" in text and str(lists.parent) not in text


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_output(tmp_path, monkeypatch):
    root = emomusic_download(tmp_path / "emomusic")
    labelled_without_audio = [t.track_id for t in READERS["emomusic"](root) if t.audio is None][:20]
    for song in labelled_without_audio:  # more files to probe, so the interruption lands mid-way
        shutil.copy(root / "clips_45seconds" / "3.mp3", root / "clips_45seconds" / f"{song}.mp3")
    calls = {"n": 0}
    real_probe = prepare.probe_audio

    def counted_probe(path):
        calls["n"] += 1
        if calls["n"] == interrupt_at:
            raise KeyboardInterrupt
        return real_probe(path)

    monkeypatch.setattr(prepare, "probe_audio", counted_probe)
    interrupt_at = None
    clean = tmp_path / "clean"
    prepare.prepare_corpus("emomusic", root, clean)
    files = calls["n"]
    assert files == 4 + 20

    calls["n"], interrupt_at = 0, 10
    resumed = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        prepare.prepare_corpus("emomusic", root, resumed)
    assert not (resumed / "data").exists()  # nothing half-written
    calls["n"], interrupt_at = 0, None
    prepare.prepare_corpus("emomusic", root, resumed)
    assert calls["n"] == files - 9  # only the files not probed before the interruption
    prepare.prepare_corpus("emomusic", root, resumed)
    assert calls["n"] == files - 9  # and a rerun is a no-op

    def published(folder: Path) -> dict[str, bytes]:
        return {
            p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*"))
            if p.is_file() and ".cache" not in p.parts
        }

    assert published(resumed) == published(clean)


def test_push_to_hub_publishes_the_folder_without_local_files(downloads, tmp_path, fake_hub, monkeypatch):
    """The repo holds the folder as it is: shards of an earlier preparation (here cut into one row each) are gone,
    or `load_dataset` would read every row twice."""
    remote, calls = fake_hub.remote, fake_hub.calls
    out = tmp_path / "out"
    args = ["prepare-data", "--corpus", "cal500", "--source", str(downloads["cal500"]), "--out", str(out)]
    with monkeypatch.context() as patch:
        patch.setattr(prepare, "SHARD_ROWS", 1)
        assert main(args + ["--push-to-hub", "someone/emotion-benchmark", "--private"]) == 0
    assert len(list(remote.glob("data/cal500/*.parquet"))) == 2
    assert main(args + ["--push-to-hub", "someone/emotion-benchmark", "--private"]) == 0
    assert len(list(remote.glob("data/cal500/*.parquet"))) == 1 and (remote / ".gitattributes").is_file()
    assert calls[-2:] == [("create_repo", "someone/emotion-benchmark", "dataset", True, True),
                          ("upload_folder", "someone/emotion-benchmark", "dataset")]
    assert not (remote / "sources.json").exists() and not (remote / ".cache").exists()
    assert (remote / "README.md").read_bytes() == (out / "README.md").read_bytes()
    published = load(remote, "cal500")
    assert sum(len(part) for part in published.values()) == 2
    assert len(published["train"][0]["mood_targets"]) == 18


def test_options_and_errors(downloads, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    cal = ["prepare-data", "--corpus", "cal500", "--source", str(downloads["cal500"]), "--out", str(out)]
    assert main(cal + ["--label-rule", "threshold", "--threshold", "3.5"]) == 0
    rows = [row for part in load(out, "cal500").values() for row in part]
    assert all(all(v >= 3.5 for m, v in zip(prepare.TAG_VOCABULARIES["cal500"], row["mood_targets"]) if m in row["moods"]) for row in rows)
    assert main(cal + ["--quantile", "0.2"]) == 2
    assert "quantile 0.03" in capsys.readouterr().err
    assert main(cal + ["--private"]) == 2  # nothing to make private: it was ignored
    assert "--private goes with --push-to-hub" in capsys.readouterr().err
    assert main(cal + ["--splits-dir", str(tmp_path)]) == 2
    assert "--splits-dir" in capsys.readouterr().err
    missing = ["prepare-data", "--corpus", "deam", "--source", str(tmp_path / "nowhere"), "--out", str(out)]
    assert main(missing) == 2
    assert "nowhere: no such folder" in capsys.readouterr().err
    pmemo = downloads["pmemo"]
    for source in (pmemo.parent, pmemo / "annotations"):  # the folder above the download's own, and one inside it
        assert main(["prepare-data", "--corpus", "pmemo", "--source", str(source), "--out", str(out)]) == 2
        assert (f"PMEmo: expected file {source / 'annotations' / 'static_annotations.csv'} is missing (the official "
                f"download's layout); the download is in {pmemo}: pass --source {pmemo}") in capsys.readouterr().err
    monkeypatch.chdir(pmemo.parent.parent)  # --source relative, as typed in a shell
    assert main(["prepare-data", "--corpus", "pmemo", "--source", pmemo.parent.name, "--out", str(out)]) == 2
    assert f"; the download is in {pmemo}: pass --source {pmemo}" in capsys.readouterr().err
    assert main(["prepare-data", "--corpus", "deam", "--source", str(downloads["deam"]), "--out", str(out),
                 "--fractions", "train=0.5,test=0.6"]) == 2
    assert "sum to 1" in capsys.readouterr().err
    assert main(["prepare-data", "--corpus", "emomusic", "--source", str(downloads["emomusic"]), "--out", str(out),
                 "--fractions", "train=0.9,val=0.1"]) == 2
    assert "--fractions: split names must be train, validation, test; got val" in capsys.readouterr().err
    emomusic = ["prepare-data", "--corpus", "emomusic", "--source", str(downloads["emomusic"]), "--out", str(out)]
    assert main([*emomusic, "--fractions", "train=0.7,validation=0.1,test=0.2"]) == 2  # a test share it would ignore
    assert "emomusic keeps its official MediaEval 2013 test split; give only the share of its development set held " \
           "out for validation, below 1 (e.g. --fractions validation=0.2; train, if given, is the rest), not " \
           "train=0.7,validation=0.1,test=0.2" in capsys.readouterr().err
    for shares in ("train=0.5,validation=0.2", "train=0.9,validation=0.9"):  # a train share it would not keep
        assert main([*emomusic, "--fractions", shares]) == 2
        assert f"is the rest), not {shares}" in capsys.readouterr().err
    for shares, said in (("train=nan", "each fraction is a number from 0 to 1; got train=nan"),  # was taken as none
                         ("validation=0.1,validation=0.2", "validation given more than once")):  # the last was taken
        with pytest.raises(SystemExit) as stop:
            main([*emomusic, "--fractions", shares])
        assert stop.value.code == 2 and said in capsys.readouterr().err
    mtg = ["prepare-data", "--corpus", "mtg_jamendo", "--source", str(downloads["mtg_jamendo"]), "--out", str(out)]
    assert main([*mtg, "--fractions", "train=0.6,validation=0.2,test=0.2"]) == 2
    assert "--fractions does not apply to mtg_jamendo: its official splits decide" in capsys.readouterr().err
    lists = ["--splits-dir", str(require_fixtures("music2emo_meta", "emomusic"))]
    assert main([*emomusic, *lists, "--fractions", "train=0.6,validation=0.2,test=0.2"]) == 2
    assert "--fractions does not apply with --splits-dir" in capsys.readouterr().err
    assert main([*emomusic, "--fractions", "validation=0.2"]) == 1  # written (the download lacks audio: reported)
    assert "validation = 20% of development" in (out / "README.md").read_text()


def test_a_folder_prepare_data_did_not_write_is_refused_and_left_as_it_was(downloads, tmp_path, capsys):
    """Its README.md would be the card and its data/deam the shards; a folder under data/ that is no corpus is passed
    over in one that prepare-data wrote."""
    project = tmp_path / "project"
    (project / "data" / "deam").mkdir(parents=True)
    (project / "README.md").write_text("MY README")
    (project / "data" / "deam" / "notes.txt").write_text("precious")
    deam = ["prepare-data", "--corpus", "deam", "--source", str(downloads["deam"])]
    for out, message in [(project, "holds files that prepare-data did not write; name a new or empty folder"),
                         (project / "README.md", "is a file")]:
        assert main([*deam, "--out", str(out)]) == 2
        assert message in capsys.readouterr().err
    assert (project / "README.md").read_text() == "MY README"
    assert (project / "data" / "deam" / "notes.txt").read_text() == "precious"
    out = tmp_path / "out"
    assert main([*deam, "--out", str(out)]) == 1  # written; the download holds annotations only (no audio: reported)
    (out / "data" / "raw").mkdir()  # the user's own, beside the corpora
    assert main([*deam, "--out", str(out)]) == 1
    assert "config_name: raw" not in (out / "README.md").read_text()
    capsys.readouterr()
    assert main([*deam, "--out", str(tmp_path / "o2"), "--fractions", "train=0.8,valid=0.1,test=0.1"]) == 2
    assert "split names must be" in capsys.readouterr().err and not (tmp_path / "o2").exists()  # before any audio


def test_data_written_again_is_loaded_anew_not_from_the_cache_of_the_old(downloads, tmp_path):
    """`datasets` caches a local folder under a key made from its card's configs alone: the test split of another
    --seed came back as the first seed's."""
    out = tmp_path / "benchmark"
    test_ids = {}
    for seed in ("0", "1"):
        main(["prepare-data", "--corpus", "deam", "--source", str(downloads["deam"]), "--out", str(out), "--seed", seed])
        written = pq.read_table(next((out / "data" / "deam").glob("test-*.parquet")))["track_id"].to_pylist()
        test_ids[seed] = sorted(load(out, "deam")["test"]["track_id"])
        assert test_ids[seed] == sorted(written)
    assert test_ids["0"] != test_ids["1"]


def test_music2emo_id_lists_decide_the_splits(downloads, tmp_path):
    out = tmp_path / "out"
    lists = require_fixtures("music2emo_meta", "deam")
    args = ["prepare-data", "--corpus", "deam", "--source", str(downloads["deam"]), "--out", str(out)]
    assert main(args + ["--splits-dir", str(lists)]) == 1  # the download has annotations but no audio: said so
    loaded = load(out, "deam")
    for split in ("train", "validation", "test"):
        expected = {str(int(x)) for x in (lists / f"{split}.txt").read_text().split()}
        assert set(loaded[split]["track_id"]) == expected


@pytest.mark.slow
def test_preparing_deam_and_emomusic_warns_of_emomusic_test_songs_deam_trains_on(downloads, tmp_path, capsys):
    """docs/datasets.md's 82 of 125 (DEAM with Music2Emo's lists, EmoMusic's official test set) and 73 of DEAM's 270
    test songs the other way (66 with Music2Emo's EmoMusic lists too), said on screen and in the card, whichever
    corpus comes second."""
    out = tmp_path / "out"
    lists = require_fixtures("music2emo_meta", "deam")
    main(["prepare-data", "--corpus", "emomusic", "--source", str(downloads["emomusic"]), "--out", str(out)])
    assert "warning" not in capsys.readouterr().err and "Songs shared" not in (out / "README.md").read_text()
    main(["prepare-data", "--corpus", "deam", "--source", str(downloads["deam"]), "--out", str(out), "--splits-dir", str(lists)])
    warning = ("warning: 82 of emomusic's 125 test tracks are deam training tracks (the two share 744 songs under "
               "the same ids): a model trained on both has heard them.")
    assert warning in capsys.readouterr().err
    card = (out / "README.md").read_text()
    assert "## Songs shared between corpora\n\n- 73 of deam's 270 test tracks are emomusic training tracks" in card
    assert "\n- 82 of emomusic's 125 test tracks are deam training tracks" in card
    assert "shared_songs" not in (out / "reports" / "deam.json").read_text()  # it changes as corpora come and go

    theirs = tmp_path / "theirs"  # both corpora split by Music2Emo's own id lists
    main(["prepare-data", "--corpus", "emomusic", "--source", str(downloads["emomusic"]), "--out", str(theirs),
          "--splits-dir", str(require_fixtures("music2emo_meta", "emomusic"))])
    main(["prepare-data", "--corpus", "deam", "--source", str(downloads["deam"]), "--out", str(theirs),
          "--splits-dir", str(lists)])
    card = (theirs / "README.md").read_text()
    assert "- 66 of deam's 270 test tracks are emomusic training tracks" in card
    assert "- 82 of emomusic's 125 test tracks are deam training tracks" in card
