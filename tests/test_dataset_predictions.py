"""The `datasets` door: a dataset with an `Audio` column of the real fixture clips in, a predictions dataset that
`load_dataset` reads out; by the command (a resumable job) and by `predict_dataset` in Python."""

from __future__ import annotations

import re
import warnings

import pytest

from music2emo_hf.cli import main
from music2emo_hf.dataset_predictions import predict_dataset
from music2emo_hf.hub import load_pipeline

from .conftest import require_fixtures

CLIPS = ("3.mp3", "7.mp3", "10.mp3")


@pytest.fixture(scope="module")
def clips() -> list[str]:
    folder = require_fixtures("emomusic", "audio")
    return [str(folder / name) for name in CLIPS]


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_pipeline(str(tiny_model_dir), device="cpu", harmony_ensemble=1)


def _audio_dataset(clips: list[str], embed: bool):
    """As users hold music in a dataset: an Audio column (file paths, or the files' bytes) beside their ids."""
    from datasets import Audio, Dataset

    audio = [{"bytes": open(clip, "rb").read(), "path": None} for clip in clips] if embed else clips
    return Dataset.from_dict({"audio": audio, "track_id": [clip.rsplit("/", 1)[1][:-4] for clip in clips],
                              "year": [2010 + i for i in range(len(clips))]}).cast_column("audio", Audio())


@pytest.mark.slow
def test_a_dataset_folder_goes_in_and_a_predictions_dataset_comes_out(tiny_model_dir, clips, pipe, tmp_path, capsys):
    from datasets import load_dataset

    source = tmp_path / "music"
    _audio_dataset(clips, embed=False).to_parquet(str(source / "data" / "train-00000-of-00001.parquet"))
    out = tmp_path / "predictions"
    argv = ["predict", "--dataset", str(source), "--output-dataset", str(out), "--model", str(tiny_model_dir),
            "--device", "cpu", "--top-k", "3", "--harmony", "--embedding", "--harmony-ensemble", "1"]  # as `pipe`
    assert main(argv) == 0
    assert f"wrote {len(clips)} rows to {out}" in capsys.readouterr().err

    rows = load_dataset(str(out), split="train")
    assert rows["row"] == list(range(len(clips))) and rows["track_id"] == ["3", "7", "10"]
    assert rows["year"] == [2010, 2011, 2012] and rows.features["year"].dtype == "int64"
    mood_columns = [name for name in rows.column_names if name.startswith("mood:")]
    assert len(mood_columns) == 56
    for row, clip in zip(rows, clips):
        direct = pipe(clip, top_k=3, return_harmony=True)
        assert row["valence"] == pytest.approx(direct["valence"], abs=1e-6) and row["key"] == direct["key"]
        assert [mood["label"] for mood in row["moods"]] == [mood["label"] for mood in direct["moods"]]
        scores = {name[5:]: row[name] for name in mood_columns if row[name] is not None}
        assert scores == pytest.approx({mood["label"]: mood["score"] for mood in direct["moods"]}, abs=1e-6)
        assert row["chords"][0]["chord"] == direct["chords"][0]["chord"]
        assert row["embedding"] == pytest.approx(pipe(clip, return_embedding=True)["embedding"], abs=1e-5)
    card = (out / "README.md").read_text()
    [data_file] = (out / "data").glob("train-*.parquet")
    assert f"path: data/{data_file.name}" in card and "untrained model" in card

    assert main(argv) == 0  # a rerun finds every row done and rewrites the same dataset
    assert f"{len(clips)} row(s) already in" in capsys.readouterr().err
    assert load_dataset(str(out), split="train")["valence"] == rows["valence"]

    # Made again from scratch without embeddings, the folder loads as it is now (datasets caches a folder whose card
    # gives a pattern by that pattern: the card names the exact file).
    (out / ".records.jsonl").unlink()
    assert main([*argv[:-3], "--harmony-ensemble", "1"]) == 0
    again = load_dataset(str(out), split="train")
    assert "embedding" not in again.column_names and again["valence"] == rows["valence"]
    assert len(list((out / "data").glob("*.parquet"))) == 1


def test_predict_dataset_in_python_gives_the_commands_rows_and_names_a_bad_row(clips, pipe):
    from datasets import Audio, Dataset, concatenate_datasets

    good = _audio_dataset(clips[:2], embed=True)
    whole = open(clips[2], "rb").read()
    cut = Dataset.from_dict({"audio": [{"bytes": whole[: len(whole) // 2], "path": None}], "track_id": ["10"],
                             "year": [2012]}).cast_column("audio", Audio())  # a download that stopped half-way
    bad = Dataset.from_dict({"audio": [{"bytes": b"not audio at all" * 100, "path": None}], "track_id": ["junk"],
                             "year": [1999]}).cast_column("audio", Audio())
    with pytest.warns(UserWarning, match=r"1 row\(s\) could not be analysed: row 3: .*not audio"):
        result = predict_dataset(concatenate_datasets([good, cut, bad]), pipe, top_k=2)
    assert result["row"] == [0, 1, 2] and result["track_id"] == ["3", "7", "10"]
    assert result["audio_warning"] == [None, None, "cut short: its header announces 45.0 s of audio and the file "
                                       "ends before that (not downloaded or copied whole); what it holds is analysed."]
    for row, clip in zip(result, clips[:2]):
        assert row["valence"] == pytest.approx(pipe(clip)["valence"], abs=1e-6)
        assert len(row["moods"]) == 2 and sum(row[f"mood:{mood['label']}"] is not None for mood in row["moods"]) == 2


def test_predict_dataset_refuses_what_it_cannot_answer_for_in_one_sentence(pipe, tmp_path):
    """Every row failing returned an empty Dataset with a warning; a DatasetDict (load_dataset without a split) and a
    model name for the pipeline failed on AttributeErrors."""
    from datasets import Dataset, DatasetDict

    relative = Dataset.from_dict({"audio": ["MEMD_audio/2.mp3", "MEMD_audio/3.mp3"], "corpus": ["deam", "deam"]})
    with pytest.raises(ValueError, match=re.escape(
            "no row could be analysed (2 tried): row 0: MEMD_audio/2.mp3: no such file; row 1: MEMD_audio/3.mp3: no "
            "such file. Its audio paths are relative ('MEMD_audio/2.mp3'): a folder made by `music2emo prepare-data` "
            "names them inside each corpus's download; run `music2emo predict --dataset FOLDER`")):
        predict_dataset(relative, pipe)
    with pytest.raises(TypeError, match=re.escape("predict_dataset takes one split, e.g. dataset['train']; got a "
                                                  "DatasetDict of the splits train, test.")):
        predict_dataset(DatasetDict({"train": relative, "test": relative}), pipe)
    with pytest.raises(TypeError, match="predict_dataset takes a music-emotion pipeline, got str"):
        predict_dataset(relative, "amaai-lab/music2emo")
    with pytest.raises(TypeError, match="batch_size: predict_dataset analyses one row at a time; for rows analysed "
                                        "together use `music2emo predict --dataset"):  # "unknown parameters" before
        predict_dataset(relative, pipe, batch_size=2)
    assert len(predict_dataset(relative.select([]), pipe)) == 0  # no rows: no failure


def test_a_corpus_keeps_its_own_labels_beside_the_predictions_of_their_names(pipe):
    """A corpus's own `valence` (an int here), `key`, `model` and `row` stay, as `input:<name>` in their own types, and
    the predictions keep theirs; a threshold that leaves the first row's moods empty types `moods` all the same."""
    from datasets import Dataset

    from .conftest import tone

    audio = [{"array": tone(2.0, freq=f), "sampling_rate": 24000} for f in (220, 330)]
    tops = [pipe(item)["moods"][0]["score"] for item in audio]
    assert tops[0] != tops[1]
    order = sorted(range(2), key=tops.__getitem__)  # the row with the lower top score first: its moods go empty
    dataset = Dataset.from_dict({"audio": [audio[i] for i in order], "valence": [7, 3], "key": ["C", "G"],
                                 "model": ["m1", "m2"], "row": [10, 11], "title": ["low", "high"],
                                 "options": ["o1", "o2"]})  # a field the card holds, not the rows: kept all the same
    threshold = sum(tops) / 2
    result = predict_dataset(dataset, pipe, threshold=threshold, return_harmony=True)
    assert result["row"] == [0, 1] and result["input:row"] == [10, 11] and result["title"] == ["low", "high"]
    assert result["input:valence"] == [7, 3] and result.features["input:valence"].dtype == "int64"
    assert result["input:key"] == ["C", "G"] and result["input:model"] == ["m1", "m2"]
    assert result["input:options"] == ["o1", "o2"]
    assert result.features["valence"].dtype == "float64"
    for row, i in zip(result, order):
        direct = pipe(audio[i], threshold=threshold, return_harmony=True)
        assert row["valence"] == pytest.approx(direct["valence"], abs=1e-6) and row["key"] == direct["key"]
        assert row["moods"] == direct["moods"]
    assert result[0]["moods"] == [] and result[1]["moods"]


def test_predict_dataset_refuses_wrong_options_once_before_any_row(pipe):
    from datasets import Dataset, IterableDataset

    from .conftest import tone

    dataset = Dataset.from_dict({"audio": [{"array": tone(1.0), "sampling_rate": 24000}] * 3})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no row is tried, so no warning names the rows
        with pytest.raises(ValueError, match="top_k"):
            predict_dataset(dataset, pipe, top_k=0)
        with pytest.raises(TypeError, match="topk"):
            predict_dataset(dataset, pipe, topk=3)
    stream = IterableDataset.from_generator(lambda: ({"audio": {"array": tone(1.0), "sampling_rate": 24000},
                                                      "take": i} for i in range(2)))
    assert stream.features is None  # its columns are known once a row is read
    assert predict_dataset(stream, pipe, top_k=1)["take"] == [0, 1]


def test_wrong_dataset_options_are_refused_in_one_line(tmp_path, capsys, clips):
    source = tmp_path / "music"
    _audio_dataset(clips[:1], embed=False).to_parquet(str(source / "data" / "train-00000-of-00001.parquet"))
    for argv, message in [
        (["--dataset", str(source)], "--dataset needs --output-dataset DIR"),
        (["--dataset", str(source), "--output-dataset", str(tmp_path / "o"), "--audio-column", "sound"],
         "has no column 'sound' (its columns: audio, track_id, year)"),
        (["--dataset", str(source), "--output-dataset", str(tmp_path / "o"), "--audio-column", "year"],
         "the dataset's column 'year' holds int64 values, not audio (an Audio column, file paths or bytes, or "
         "{'array', 'sampling_rate'} dicts); name the audio column"),  # each row failed on its own
        (["--dataset", str(source), "--output-dataset", str(tmp_path / "o"), "--split", "test"], "no split 'test'"),
        ([clips[0], "--output-dataset", str(tmp_path / "o")], "--output-dataset goes with --dataset"),
        ([clips[0], "--audio-column", "sound"], "--audio-column goes with --dataset"),  # it was ignored
        (["--dataset", str(source), "--output-dataset", str(tmp_path / "o"), "--private"],
         "--private goes with --push-to-hub"),
        (["--dataset", "you/music", "--output-dataset", str(tmp_path / "o"), "--push-to-hub", "You/Music"],
         "--push-to-hub You/Music is the input dataset"),  # publishing would replace the input's files
        ([], "give audio files or folders, or --dataset"),
    ]:
        assert main(["predict", *argv, "--model", str(tmp_path / "no-model")]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and "loading model" not in err, (argv, err)


def test_a_saved_dataset_of_waveforms_goes_through_the_command(tiny_model_dir, pipe, tmp_path, capsys):
    """A `save_to_disk` folder whose audio column holds {array, sampling_rate} dicts (no files anywhere). Its class
    labels are kept as such (they were left out); bytes and timestamps, which the job's JSON records cannot hold, are
    left out with a note (the job stopped: "Object of type bytes is not JSON serializable")."""
    import datetime

    from datasets import ClassLabel, Dataset, load_dataset

    from .conftest import tone

    saved = tmp_path / "saved"
    dataset = Dataset.from_dict({
        "sound": [{"array": tone(2.0, freq=f).tolist(), "sampling_rate": 24000} for f in (220, 330)],
        "title": ["low", "high"], "genre": [1, 0], "cover": [b"\x89PNG", b"\xff\xd8"],
        "added": [datetime.datetime(2020, 1, 1), datetime.datetime(2021, 6, 1)],
    }).cast_column("genre", ClassLabel(names=["rock", "jazz"]))
    dataset.save_to_disk(str(saved))
    out = tmp_path / "out"
    assert main(["predict", "--dataset", str(saved), "--audio-column", "sound", "--output-dataset", str(out),
                 "--model", str(tiny_model_dir), "--harmony-ensemble", "1"]) == 0
    assert ("the column(s) cover (binary), added (timestamp[us]) are not copied into the predictions (the job's "
            "records hold JSON values") in capsys.readouterr().err
    rows = load_dataset(str(out), split="train")
    assert rows["title"] == ["low", "high"] and len(rows["moods"][0]) == 56
    assert rows["genre"] == [1, 0] and rows.features["genre"].names == ["rock", "jazz"]
    assert "cover" not in rows.column_names and "added" not in rows.column_names
    in_python = predict_dataset(dataset, pipe, audio_column="sound")  # no JSON on the way: all kept, in their types
    assert in_python.features["genre"] == rows.features["genre"] and in_python["cover"] == [b"\x89PNG", b"\xff\xd8"]
    assert in_python["added"][1] == datetime.datetime(2021, 6, 1)


@pytest.mark.parametrize("batch_size", ["1", "2"])
def test_a_row_without_audio_is_reported_and_the_others_are_analysed(tiny_model_dir, clips, tmp_path, capsys,
                                                                     batch_size):
    """Its error used to stop the job at that row, on every rerun."""
    from datasets import Dataset, load_dataset

    saved = tmp_path / "saved"
    Dataset.from_dict({"id": [0, 1, 2, 3], "audio": [clips[0], None, clips[1], None]}).save_to_disk(str(saved))
    out = tmp_path / "out"
    argv = ["predict", "--dataset", str(saved), "--output-dataset", str(out), "--model", str(tiny_model_dir),
            "--harmony-ensemble", "1", "--batch-size", batch_size]
    assert main(argv) == 1
    err = capsys.readouterr().err
    for row in (1, 3):
        assert (f"error: {saved} [train] row {row}: no audio in it (expected the bytes or path of an Audio column, a "
                f"path, or {{'array', 'sampling_rate'}}; got NoneType).") in err
    assert load_dataset(str(out), split="train")["id"] == [0, 2]

    gone = [str(tmp_path / "gone-0.mp3"), str(tmp_path / "gone-1.mp3")]
    Dataset.from_dict({"id": [0, 1], "audio": gone}).save_to_disk(str(tmp_path / "none"))
    argv[2], argv[4] = str(tmp_path / "none"), str(tmp_path / "out-none")  # no row analysed: no dataset to load
    assert main(argv) == 1
    assert (f"music2emo: no row could be analysed, so no dataset was written to {tmp_path / 'out-none'} (why, for "
            f"each row: {tmp_path / 'out-none' / '.records.jsonl.errors.jsonl'})") in capsys.readouterr().err
    assert not (tmp_path / "out-none" / "data").exists() and not (tmp_path / "out-none" / "README.md").exists()


def test_a_folder_or_archive_of_audio_files_with_metadata_goes_through_the_command(tiny_model_dir, pipe, tmp_path,
                                                                                     capsys):
    """`datasets`' audiofolder layout (audio files beside a metadata.csv; here also zipped), as many Hub datasets
    are: streamed, `datasets` would encode each file with torchcodec before handing it over (an ImportError without
    it); the rows hold the files' paths (an archive member's URL), which this package reads itself. In Python too
    (docs/catalog.md's snippet), as the command does."""
    import zipfile

    import soundfile as sf
    from datasets import load_dataset

    from .conftest import tone

    folder = tmp_path / "music"
    folder.mkdir()
    titles = {"low.wav": ("low", 220.0), "high.wav": ("high", 440.0), "mid.wav": ("mid", 330.0)}
    for name, (_, freq) in titles.items():
        sf.write(folder / name, tone(2.0, freq=freq), 24000)
    (folder / "metadata.csv").write_text("file_name,title\n" + "".join(f"{n},{t}\n" for n, (t, _) in titles.items()))
    archive = tmp_path / "zipped"
    archive.mkdir()
    with zipfile.ZipFile(archive / "music.zip", "w") as zipped:
        for path in folder.iterdir():
            zipped.write(path, path.name)
    answers = []
    for source in (folder, archive):
        out = tmp_path / f"out-{source.name}"
        assert main(["predict", "--dataset", str(source), "--output-dataset", str(out), "--model", str(tiny_model_dir),
                     "--harmony-ensemble", "1", "--top-k", "2"]) == 0, capsys.readouterr().err
        rows = load_dataset(str(out), split="train")
        assert rows["title"] == ["low", "high", "mid"] and rows["row"] == [0, 1, 2]
        answers.append([(row["valence"], row["arousal"], [m["label"] for m in row["moods"]]) for row in rows])
    assert answers[0] == answers[1]  # the archive's members are the same files
    streamed = predict_dataset(load_dataset(str(folder), split="train", streaming=True), pipe, top_k=2)  # in Python,
    assert [(row["valence"], row["arousal"], [m["label"] for m in row["moods"]]) for row in streamed] == answers[0]

    (folder / "broken.wav").write_bytes(b"RIFF not really")  # a row whose audio cannot be read: named, the rest kept
    (folder / "metadata.csv").write_text((folder / "metadata.csv").read_text() + "broken.wav,broken\n")
    out = tmp_path / "out-with-a-bad-row"
    assert main(["predict", "--dataset", str(folder), "--output-dataset", str(out), "--model", str(tiny_model_dir),
                 "--harmony-ensemble", "1", "--top-k", "2"]) == 1
    assert load_dataset(str(out), split="train")["title"] == ["low", "high", "mid"]
    assert "1 input row(s) could not be analysed and are not here" in (out / "README.md").read_text()


def test_rows_read_ahead_for_a_batch_are_read_from_a_stream_once(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """From a review: with --batch-size above 1 the rows are read ahead of their records, and each record asked its
    row of the stream again, which started the stream over from its first row: a streamed dataset (a Hub one, or a
    folder) was read again and again, its cost growing with the square of its rows."""
    import soundfile as sf
    from datasets import IterableDataset, load_dataset

    from .conftest import tone

    folder = tmp_path / "music"
    folder.mkdir()
    for index in range(6):
        sf.write(folder / f"{index}.wav", tone(1.0, freq=200.0 + 50 * index), 24000)
    (folder / "metadata.csv").write_text("file_name,title\n" + "".join(f"{i}.wav,track {i}\n" for i in range(6)))
    starts = []
    iterate = IterableDataset.__iter__
    monkeypatch.setattr(IterableDataset, "__iter__", lambda self: starts.append(self) or iterate(self))
    read = {}
    for batch in (1, 4):
        starts.clear()
        out = tmp_path / f"out-{batch}"
        assert main(["predict", "--dataset", str(folder), "--output-dataset", str(out), "--model", str(tiny_model_dir),
                     "--harmony-ensemble", "1", "--batch-size", str(batch)]) == 0, capsys.readouterr().err
        read[batch] = len(starts)
        assert load_dataset(str(out), split="train")["title"] == [f"track {i}" for i in range(6)]
    assert read[4] == read[1], read


def _predict_as_one_of_two_ranks(dataset_dir: str, model_dir: str, expected: str) -> None:
    import json

    from accelerate import PartialState
    from datasets import load_from_disk

    pipe = load_pipeline(model_dir, device="cpu", harmony_ensemble=1)
    result = predict_dataset(load_from_disk(dataset_dir), pipe, top_k=2)
    assert PartialState().num_processes == 2
    assert result.to_list() == json.loads(open(expected).read())  # every rank gets every row, in input order


@pytest.mark.slow
def test_predict_dataset_shares_rows_across_accelerate_processes(tiny_model_dir, pipe, tmp_path):
    import json
    import subprocess
    import sys

    from datasets import Dataset

    from .conftest import ROOT, tone

    dataset = Dataset.from_dict({"audio": [{"array": tone(1.5, freq=f), "sampling_rate": 24000} for f in (200, 260, 320)],
                                 "track_id": ["a", "b", "c"]})
    dataset.save_to_disk(str(tmp_path / "music"))
    expected = tmp_path / "expected.json"
    expected.write_text(json.dumps(predict_dataset(dataset, pipe, top_k=2).to_list()))
    launch = ("import sys, accelerate; from tests.test_dataset_predictions import _predict_as_one_of_two_ranks as run; "
              "accelerate.debug_launcher(run, args=tuple(sys.argv[1:]), num_processes=2)")
    done = subprocess.run([sys.executable, "-c", launch, str(tmp_path / "music"), str(tiny_model_dir), str(expected)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_another_split_is_refused_onto_the_same_output_and_a_folder_of_other_files_is_never_written_over(
        tiny_model_dir, tmp_path, capsys):
    """Rows are named by their index: train's row 0 is not test's, so a rerun onto the output from another split
    (or dataset) is refused, not answered "already done" with train's predictions. And an --output-dataset that
    holds anything but this command's predictions (the input dataset itself, say) is refused before it is touched."""
    from datasets import Dataset, DatasetDict, load_dataset

    from .conftest import tone

    def waves(*freqs):
        return Dataset.from_dict({"audio": [{"array": tone(2.0, freq=f).tolist(), "sampling_rate": 24000}
                                            for f in freqs], "title": [str(f) for f in freqs]})

    saved = tmp_path / "saved"
    DatasetDict({"train": waves(220, 330, 440), "test": waves(550, 660)}).save_to_disk(str(saved))
    out = tmp_path / "out"
    common = ["--output-dataset", str(out), "--model", str(tiny_model_dir), "--harmony-ensemble", "1"]
    assert main(["predict", "--dataset", str(saved), "--split", "train", *common]) == 0
    capsys.readouterr()
    assert main(["predict", "--dataset", str(saved), "--split", "test", *common]) == 2
    err = capsys.readouterr().err
    assert re.search(f"holds records made with .*--dataset {saved} --split train; this run has .*--split test", err)
    assert load_dataset(str(out), split="train")["title"] == ["220", "330", "440"]

    parquet = tmp_path / "theirs"
    waves(220).to_parquet(str(parquet / "data" / "train-00000-of-00001.parquet"))
    (parquet / "README.md").write_text("# my dataset\n")
    before = {path: path.read_bytes() for path in parquet.rglob("*") if path.is_file()}
    assert main(["predict", "--dataset", str(parquet), "--output-dataset", str(parquet), *common[2:]]) == 2
    assert "holds files that are not predictions of this command" in capsys.readouterr().err
    assert main(["predict", "--dataset", str(parquet), "--output-dataset", "/proc/predictions", *common[2:]]) == 2
    assert "--output-dataset /proc/predictions: cannot make that folder (" in capsys.readouterr().err
    assert {path: path.read_bytes() for path in parquet.rglob("*") if path.is_file()} == before
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine\n")
    assert main(["predict", "--dataset", str(parquet), "--output-dataset", str(a_file), *common[2:]]) == 2
    assert f"--output-dataset {a_file}: cannot make that folder ({a_file} is not a folder); choose one in a folder " \
           "you can write." in capsys.readouterr().err  # mkdir's "File exists"
    assert main(["predict", "--dataset", str(tmp_path / "none"), "--output-dataset", str(tmp_path / "new"),
                 *common[2:]]) == 2
    assert not (tmp_path / "new").exists()  # made for a run that failed: it was left empty


def test_a_dataset_job_resumes_from_what_a_crash_left_and_its_rows_run_alone_name_the_dataset(tiny_model_dir, tmp_path,
                                                                                               capsys):
    """A run killed on its first row leaves only its lock and parts (its in-flight marker): the rerun takes the folder
    as its own, analyses that row alone, in a child, and records it with the dataset and split as the other rows, so
    the run after that resumes too. A folder whose every row failed is this command's too."""
    import json

    from datasets import Dataset

    from .conftest import tone

    saved = tmp_path / "saved"
    Dataset.from_dict({"audio": [{"array": tone(2.0, freq=f).tolist(), "sampling_rate": 24000} for f in (220, 330)],
                       "title": ["a", "b"]}).save_to_disk(str(saved))
    out = tmp_path / "out"
    parts = out / ".records.jsonl.parts"
    parts.mkdir(parents=True)
    (out / ".records.jsonl.lock").write_text("")  # a kill leaves the lock file (unlocked)
    (parts / "rank-0.inflight").write_text(json.dumps({"key": "0", "input": "row 0", "pid": 1}) + "\n")
    argv = ["predict", "--dataset", str(saved), "--output-dataset", str(out), "--model", str(tiny_model_dir),
            "--harmony-ensemble", "1"]
    assert main(argv) == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (out / ".records.jsonl").read_text().splitlines()]
    assert [record["row"] for record in records] == [0, 1]
    assert records[0]["options"] == records[1]["options"] and records[0]["options"]["--split"] == "train"
    assert main(argv) == 0 and "2 row(s) already in" in capsys.readouterr().err

    missing = tmp_path / "missing"
    Dataset.from_dict({"audio": [str(tmp_path / "gone.wav")], "title": ["gone"]}).save_to_disk(str(missing))
    failed = tmp_path / "failed"
    argv = ["predict", "--dataset", str(missing), "--output-dataset", str(failed), "--model", str(tiny_model_dir)]
    assert main(argv) == 1
    assert main(argv) == 1 and "not predictions of this command" not in capsys.readouterr().err
    older = tmp_path / "older"  # records of a version that did not name their dataset
    older.mkdir()
    (older / ".records.jsonl").write_text(json.dumps({"row": 0, "valence": 5.0, "options": {}}) + "\n")
    argv = ["predict", "--dataset", str(saved), "--output-dataset", str(older), "--model", str(tiny_model_dir)]
    assert main(argv) == 2
    assert "holds records of an older version of music2emo, which did not name the dataset" in capsys.readouterr().err
