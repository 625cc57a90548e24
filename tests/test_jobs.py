"""`music2emo predict` as a job: split across real processes (torchrun, as `accelerate launch` starts them), merged in
input order, and finished by a rerun after a process is killed or an input crashes the analysis."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from music2emo_hf.cli import main
from music2emo_hf.dataset_predictions import records_in_row_order
from music2emo_hf.jobs import CommandError, RecordWriter, balanced_shares, drop_cut_off_record, process_state

from .conftest import ROOT, jsonl, tone

FAULTS = ROOT / "tests" / "fault_injection"


def test_shares_are_balanced_by_duration_and_keep_input_order():
    durations = [30.0, 240.0, 200.0, 45.0, 60.0, 180.0, 5.0]
    shares = balanced_shares(durations, 2)
    assert sorted(i for share in shares for i in share) == list(range(7))
    loads = [sum(durations[i] for i in share) for share in shares]
    assert max(loads) - min(loads) <= 30.0  # longest first, each to the lighter process
    assert all(share == sorted(share) for share in shares)
    assert balanced_shares(durations, 1) == [list(range(7))]
    assert balanced_shares([1.0], 3) == [[0], [], []]


def test_a_record_cut_off_by_a_kill_is_dropped_however_long_the_file(tmp_path):
    path = tmp_path / "out.jsonl"
    complete = "".join(json.dumps({"file": f"f{i}", "pad": "x" * 50_000}) + "\n" for i in range(3))
    path.write_text(complete + '{"file": "f3", "pad": "' + "y" * 100_000)  # the cut-off line spans two read blocks
    drop_cut_off_record(path)
    assert path.read_text() == complete
    assert RecordWriter(str(path)).done == {"f0", "f1", "f2"}
    drop_cut_off_record(path)  # nothing more to drop
    assert path.read_text() == complete


def test_a_csv_row_cut_inside_a_name_holding_a_newline_is_dropped(tmp_path):
    """A kill right after the newline inside a quoted name leaves a "complete" last line: its row is short. It is cut
    off when the run writes, not when the file is read (a run refused meanwhile leaves the file as it was)."""
    path = tmp_path / "out.csv"
    whole = 'file,valence\r\n"/music/a.wav",5.0\r\n"/music/new\nline.wav",4.0\r\n'
    path.write_text(whole + '"/music/other\n', newline="")
    writer = RecordWriter(str(path))
    assert writer.done == {"/music/a.wav", "/music/new\nline.wav"}
    assert path.read_bytes().decode() == whole + '"/music/other\n'
    writer.write({"file": "/music/other\n", "valence": 3.0}, [])
    writer.close()
    assert path.read_bytes().decode() == whole + '"/music/other\n",3.0\r\n'
    path.write_text('file,valence\r\n"/music/new\n/music/b.wav",5.0\r\n"/music/c.wav"\r\n"/d.wav",1\r\n', newline="")
    with pytest.raises(CommandError, match="holds something other than music2emo records"):
        RecordWriter(str(path))  # a short row with rows after it: no kill made that


def test_a_whole_last_record_without_its_newline_is_kept_and_a_carriage_return_in_a_csv_name_is_part_of_it(tmp_path):
    """A line deleted in an editor that saves without a last newline: the last record is whole, not cut short by a
    kill. A CSV name holding a carriage return ended the file's reading there, so every later record was redone and
    then cut away."""
    path = tmp_path / "out.jsonl"
    path.write_text("\n".join(json.dumps({"file": f"/{name}.wav", "valence": 5.0}) for name in "ac"))
    writer = RecordWriter(str(path))
    assert writer.done == {"/a.wav", "/c.wav"}
    writer.write({"file": "/b.wav", "valence": 4.0}, [])
    writer.close()
    assert [json.loads(line)["file"] for line in path.read_text().split("\n")[:-1]] == ["/a.wav", "/c.wav", "/b.wav"]

    path = tmp_path / "out.csv"
    writer = RecordWriter(str(path))
    for name in ("/music/a.wav", "/music/b\rx.wav", "/music/c.wav"):
        writer.write({"file": name, "valence": 5.0}, [])
    writer.close()
    assert RecordWriter(str(path)).done == {"/music/a.wav", "/music/b\rx.wav", "/music/c.wav"}
    writer = RecordWriter(str(path))
    writer.write({"file": "/music/d.wav", "valence": 4.0}, [])
    writer.close()
    assert RecordWriter(str(path)).done == {"/music/a.wav", "/music/b\rx.wav", "/music/c.wav", "/music/d.wav"}


@pytest.mark.parametrize("name,content", [
    ("notes.jsonl", '{"important": "data"}'),  # one line, no newline: not a record a kill cut short
    ("people.csv", "name,score\nalice,1\nbob,2"),
    ("list.jsonl", '{"id": 1}\n{"id": 2}\n{"id": 3'),
])
def test_a_file_of_something_else_is_refused_and_left_byte_for_byte(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(CommandError, match="holds something other than music2emo records"):
        RecordWriter(str(path))
    assert path.read_text() == content


@pytest.mark.parametrize("name,records,tail,cut", [  # appended by hand without a newline; what a kill leaves
    ("out.jsonl", '{"file": "/a.wav", "valence": 5.0}\n', "hello", '{"file": "/b.w'),
    ("out.csv", "file,mood:calm,valence\n/a.wav,0.5,5.0\n", "my,notes", "/b.wav,0.4"),
])
def test_records_then_a_last_line_that_starts_no_record_are_refused_and_left_byte_for_byte(tmp_path, name, records,
                                                                                           tail, cut):
    """Only the start of a record can be what a kill left: anything else after whole records is someone's data."""
    path = tmp_path / name
    path.write_text(records + tail)
    with pytest.raises(CommandError, match=f"its last line, '{tail}', is not a music2emo record, nor the start of one"):
        RecordWriter(str(path))
    assert path.read_text() == records + tail
    path.write_text(records + cut)
    assert RecordWriter(str(path)).done == {"/a.wav"}  # a record's start: cut short by a kill, redone


def test_a_first_record_cut_by_a_kill_is_redone_and_an_output_that_is_no_file_is_refused(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"file": "/a.wav", "val')  # killed while writing the first record
    writer = RecordWriter(str(path))
    assert writer.done == set()
    writer.write({"file": "/a.wav", "valence": 5.0}, [])
    writer.close()
    assert path.read_text() == '{"file": "/a.wav", "valence": 5.0}\n'
    os.mkfifo(tmp_path / "pipe.jsonl")  # read back, a device or a pipe could be endless (/dev/full, through a link)
    with pytest.raises(CommandError, match="pipe.jsonl: is not a regular file"):
        RecordWriter(str(tmp_path / "pipe.jsonl"))


def test_a_rerun_with_nothing_to_write_still_cuts_off_a_record_a_kill_cut_short(tiny_model_dir, tmp_path, write_wav):
    song = write_wav("a.wav", tone(1.0))
    out = tmp_path / "out.jsonl"
    argv = ["predict", str(song), "--model", str(tiny_model_dir), "--device", "cpu", "-o", str(out)]
    assert main(argv) == 0
    whole = out.read_text()
    out.write_text(whole + '{"file": "/music/b.wav", "vale')  # a kill while b's record was written
    assert main(argv) == 0  # a.wav is in it, b.wav not asked for: nothing to write
    assert out.read_text() == whole


def test_a_failed_write_leaves_whole_records_and_says_where(tmp_path, monkeypatch):
    """A full disk, as a write that stops part-way; on stdout there is no file to resume."""
    import errno
    import io

    class FullAfter(io.StringIO):
        def __init__(self, handle, room: int):
            super().__init__()
            self.handle, self.room = handle, room

        def write(self, text):
            self.handle.write(text[:self.room])
            self.handle.flush()
            self.room = max(0, self.room - len(text))
            if self.room == 0:
                raise OSError(errno.ENOSPC, "No space left on device")
            return len(text)

    path = tmp_path / "out.jsonl"
    writer = RecordWriter(str(path))
    writer.write({"file": "/a.wav", "valence": 5.0}, [])
    writer.handle = FullAfter(writer.handle, room=10)
    with pytest.raises(CommandError, match="cannot write .No space left on device.; make room and run the same"):
        writer.write({"file": "/b.wav", "valence": 4.0}, [])
    assert path.read_text() == '{"file": "/a.wav", "valence": 5.0}\n'
    monkeypatch.setattr(sys, "stdout", FullAfter(io.StringIO(), room=0))
    with pytest.raises(CommandError, match=r"^cannot write to the standard output \(No space left on device\)\.$"):
        RecordWriter(None).write({"file": "/a.wav"}, [])


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_record_unlike_the_files_first_is_refused_before_anything_is_written(tmp_path, suffix):
    """The guard behind the options check (tests/test_cli.py): a model that answers otherwise under the same options,
    such as a new revision of a released checkpoint, or a model folder replaced by one with other heads."""
    def record(name: str, revision: str, **extra) -> dict:
        return {"file": name, "moods": [{"label": "calm", "score": 0.5}], "valence": 5.0,
                "model": {"repo": "amaai-lab/music2emo", "checkpoint": "J_all", "revision": revision}, "options": {},
                **extra}

    path = tmp_path / f"out{suffix}"
    RecordWriter(str(path)).write(record("/a.wav", "1" * 40), ["calm", "tense"])
    path.write_text("\n" + path.read_text())  # a blank first line (an editor's) is not the CSV's header
    written = path.read_text()
    writer = RecordWriter(str(path))
    assert writer.done == {"/a.wav"}
    with pytest.raises(CommandError, match=re.escape(
            "the file's records come from amaai-lab/music2emo:J_all@111111111111, this run's from "
            "amaai-lab/music2emo:J_all@222222222222. Choose another output")):
        writer.write(record("/b.wav", "2" * 40), ["calm", "tense"])
    with pytest.raises(CommandError, match="this run's records have key and the file's do not"):
        writer.write(record("/b.wav", "1" * 40, key="C major"), ["calm", "tense"])
    writer.close()
    assert path.read_text() == written
    writer.write(record("/b.wav", "1" * 40), ["calm", "tense"])
    writer.close()
    assert RecordWriter(str(path)).done == {"/a.wav", "/b.wav"}
    if suffix == ".csv":  # a CSV of its header alone: a row of other columns is refused too
        path.write_text(path.read_text().strip().splitlines()[0] + "\n")
        with pytest.raises(CommandError, match="its header names other columns than this run's records have"):
            RecordWriter(str(path)).write(record("/c.wav", "1" * 40, key="C major"), ["calm", "tense"])


def test_a_refused_runs_records_left_in_the_parts_are_removed_and_a_killed_runs_kept(tmp_path):
    """Several processes: the main one refuses a record unlike the output's first only after another process may have
    written some to its part; the next run removes those (they used to be merged first and refuse every run), and
    keeps what a killed run of the same kind left."""
    from music2emo_hf.jobs import Job

    def record(name: str, revision: str) -> str:
        return json.dumps({"file": name, "valence": 5.0, "model": {"repo": "r", "revision": revision},
                           "options": {"--top-k": 3}}) + "\n"

    output = tmp_path / "out.jsonl"
    output.write_text(record("/a.wav", "1"))
    parts = tmp_path / "out.jsonl.parts"
    parts.mkdir()
    (parts / "rank-1.jsonl").write_text(record("/c.wav", "2") + record("/d.wav", "2"))  # the refused run's
    (parts / "rank-2.jsonl").write_text(record("/b.wav", "1"))  # a killed run's, of the output's kind
    job = Job(str(output))
    plan = job.plan(["/a.wav", "/b.wav", "/c.wav", "/d.wav"], lambda key: 1.0)
    assert plan.discarded == 2 and plan.already_done == 2 and plan.shares == [["/c.wav", "/d.wav"]]
    assert [json.loads(line)["file"] for path in parts.glob("leftover-*.jsonl") for line in path.open()] == ["/b.wav"]
    job.release()


def test_a_killed_runs_records_are_merged_in_input_order_not_name_order(tmp_path):
    """Each process's part is in input order; merged, they follow the inputs (here /z, /a, /m), not their names."""
    from tqdm import tqdm

    from music2emo_hf.jobs import Job

    output = tmp_path / "out.jsonl"
    parts = tmp_path / "out.jsonl.parts"
    parts.mkdir()

    def record(name: str) -> str:
        return json.dumps({"file": name, "valence": 5.0}) + "\n"

    (parts / "rank-0.jsonl").write_text(record("/z.wav") + record("/m.wav"))
    (parts / "rank-1.jsonl").write_text(record("/a.wav"))
    keys = ["/z.wav", "/a.wav", "/m.wav"]
    job = Job(str(output))
    try:
        plan = job.plan(keys, lambda key: 1.0)
        assert plan.shares == [[]] and plan.leftovers == 3
        job.run(plan, keys, [], analyse=lambda taken: iter(()), analyse_alone=lambda taken: iter(()), label=str,
                progress=tqdm(disable=True))
        assert job.finish(keys) == (0, [])  # none analysed by this run
    finally:
        job.release()
    assert [record["file"] for record in jsonl(output)] == keys


def test_csv_label_columns_are_in_one_order_whatever_each_files_ranking(tmp_path):
    """`--labels` scores are ranked per file; their CSV columns are not, so every row of the file fits its header."""
    import csv

    from music2emo_hf.jobs import RecordWriter

    output = tmp_path / "out.csv"
    writer = RecordWriter(str(output))
    writer.write({"file": "/a.wav", "zero_shot": [{"label": "tense", "score": 0.4}, {"label": "calm", "score": 0.1}]},
                 [])
    writer.write({"file": "/b.wav", "zero_shot": [{"label": "calm", "score": 0.5}, {"label": "tense", "score": 0.2}]},
                 [])
    writer.close()
    with output.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["file", "label:calm", "label:tense"]
    assert [(row["label:calm"], row["label:tense"]) for row in rows] == [("0.1", "0.4"), ("0.5", "0.2")]


def test_a_second_run_onto_an_output_being_written_is_refused(tiny_model_dir, tmp_path, capsys):
    """Two runs appending to one output would each write the records the other writes."""
    from music2emo_hf.jobs import Job

    import soundfile as sf

    song, output = tmp_path / "song.wav", tmp_path / "out.jsonl"
    sf.write(song, tone(1.0), 24000)
    running = Job(str(output))  # a run in progress, holding the output
    argv = ["predict", str(song), "--model", str(tiny_model_dir), "-o", str(output)]
    assert main(argv) == 2
    assert f"--output {output}: another music2emo run (pid {os.getpid()}) is writing to it" in capsys.readouterr().err
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "same.jsonl").symlink_to(output)  # the same file by another name: the same lock
    assert main([*argv[:-1], str(tmp_path / "links" / "same.jsonl")]) == 2
    assert "another music2emo run" in capsys.readouterr().err
    running.release()
    assert main(argv) == 0 and len(jsonl(output)) == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["links", "out.jsonl", "song.wav"]  # no lock left


def test_several_processes_without_accelerate_are_told_what_to_install(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """Accelerate is in the train extra, not the base install: a launched run without it says so, writes nothing."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setitem(sys.modules, "accelerate", None)  # import accelerate raises ImportError
    output = tmp_path / "out.jsonl"
    assert main(["predict", str(tmp_path), "--model", str(tiny_model_dir), "-o", str(output)]) == 2
    assert "Accelerate, which is not installed: pip install accelerate (or run one process)" in capsys.readouterr().err
    assert main(["predict", "--dataset", "some/dataset", "--output-dataset", str(tmp_path / "predictions"), "--model",
                 str(tiny_model_dir)]) == 2
    assert "pip install accelerate" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no records, lock or dataset folder left
    with pytest.raises(ImportError, match="pip install accelerate"):  # from Python, the ImportError it is
        process_state()


def test_dataset_records_are_read_back_in_row_order(tmp_path):
    path = tmp_path / ".records.jsonl"
    path.write_text("".join(json.dumps({"row": row, "valence": row / 10}) + "\n" for row in (0, 1, 3, 4, 2)))
    assert [record["row"] for record in records_in_row_order(path)] == [0, 1, 2, 3, 4]


def test_inputs_taken_ahead_are_in_flight_until_recorded(tmp_path):
    """An analysis that takes inputs ahead (a batch): the in-flight marker names each taken input until its record
    is written, so a process that dies mid-batch has all of them analysed alone by the rerun; a suspect of the plan
    runs alone; a run stopped by an error (not killed) leaves no marker."""
    import itertools

    from music2emo_hf.jobs import Job

    marker = tmp_path / "rank-0.inflight"

    def in_flight() -> list[str]:
        return [record["key"] for record in jsonl(marker)] if marker.exists() else []

    seen = []

    def analyse(keys):
        first = list(itertools.islice(keys, 2))
        seen.append(in_flight())
        for key in [*first, *keys]:
            yield ValueError("bad input") if key == "b" else {"file": key}

    alone = lambda keys: ({"file": key, "alone": True} for key in keys)  # noqa: E731
    answers = Job._answers(["a", "b", "c", "d"], {"c"}, analyse, alone, str, marker)
    got = []
    for key, answer in answers:
        assert in_flight()[0] == key
        got.append((key, answer if isinstance(answer, dict) else str(answer)))
    assert got == [("a", {"file": "a"}), ("b", "bad input"), ("c", {"file": "c", "alone": True}), ("d", {"file": "d"})]
    assert seen == [["a", "b"], ["d"]] and not marker.exists()
    stopped = Job._answers(["a", "b"], set(), analyse, None, str, marker)
    next(stopped)
    assert in_flight() == ["a", "b"]
    stopped.close()
    assert not marker.exists()


def _env(**faults: str) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "ACCELERATE_USE_CPU": "1", **faults}
    env["PYTHONPATH"] = os.pathsep.join([str(FAULTS), str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _predict_command(processes: int, *args: str) -> list[str]:
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes)] if processes > 1 else [sys.executable]
    return [*launch, "-m", "music2emo_hf.cli", "predict", *args]


@pytest.fixture
def songs(write_wav) -> list[Path]:
    """Six short songs of different lengths (so the shares are known), in a folder."""
    return [write_wav(f"songs/s{i}.wav", tone(1.0 + 0.5 * i, freq=180.0 + 40 * i, seed=i)) for i in range(6)]


@pytest.mark.slow
def test_two_processes_killed_midway_finish_on_rerun_with_the_records_of_one(tiny_model_dir, songs, tmp_path, capsys):
    folder = str(songs[0].parent)
    reference = tmp_path / "one.jsonl"
    assert main(["predict", folder, "--model", str(tiny_model_dir), "-o", str(reference), "--top-k", "3",
                 "--harmony-ensemble", "1", "--device", "cpu"]) == 0  # where the two processes below run
    capsys.readouterr()

    output = tmp_path / "two.jsonl"
    args = [folder, "--model", str(tiny_model_dir), "-o", str(output), "--top-k", "3", "--harmony-ensemble", "1"]
    shares = balanced_shares([1.0 + 0.5 * i for i in range(6)], 2)
    hang = f"s{shares[1][-1]}.wav"  # the last song of the second process: it waits there, after writing records
    job = subprocess.Popen(_predict_command(2, *args), env=_env(MUSIC2EMO_TEST_HANG_ON=hang), cwd=tmp_path,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    marker = Path(f"{output}.parts") / "rank-1.inflight"
    deadline = time.monotonic() + 300
    while not (marker.exists() and hang in marker.read_text()) and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job.poll() is None, job.communicate()[1][-3000:]
    records_before = jsonl(Path(f"{output}.parts") / "rank-1.jsonl")
    assert len(records_before) == len(shares[1]) - 1
    os.kill(json.loads(marker.read_text())["pid"], signal.SIGKILL)  # kill -9 of one rank, mid-run
    _, stderr = job.communicate(timeout=120)
    assert job.returncode != 0 and not output.exists(), stderr[-3000:]  # the launcher stopped the job before the merge

    rerun = subprocess.run(_predict_command(2, *args), env=_env(), cwd=tmp_path, capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "file(s) already in" in rerun.stderr  # what was written before the kill is kept
    assert jsonl(output) == jsonl(reference)  # one record per file, in input order, the same answers
    assert not Path(f"{output}.parts").exists() and not Path(f"{output}.errors.jsonl").exists()
    assert sum("music2emo: loading model" in line for line in rerun.stderr.splitlines()) == 1  # said once, by rank 0


@pytest.mark.slow
def test_a_dataset_job_across_two_processes_writes_its_rows_in_order_and_says_its_notes_once(tiny_model_dir, tmp_path):
    """The rows of a dataset shared by two ranks come out as one predictions dataset in row order; the note on
    columns left out (bytes here) is the main process's, once, not once per process."""
    from datasets import Dataset, load_dataset

    saved = tmp_path / "saved"
    Dataset.from_dict({"audio": [{"array": tone(1.0 + i / 2, freq=200.0 + 50 * i).tolist(), "sampling_rate": 24000}
                                 for i in range(4)],
                       "title": [f"t{i}" for i in range(4)], "cover": [b"\x89PNG"] * 4}).save_to_disk(str(saved))
    out = tmp_path / "out"
    run = subprocess.run(_predict_command(2, "--dataset", str(saved), "--output-dataset", str(out), "--model",
                                          str(tiny_model_dir), "--harmony-ensemble", "1"),
                         env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stderr.count("the column(s) cover (binary) are not copied into the predictions") == 1, run.stderr
    rows = load_dataset(str(out), split="train")
    assert rows["row"] == [0, 1, 2, 3] and rows["title"] == ["t0", "t1", "t2", "t3"]


def test_a_csv_job_resumed_after_a_kill_takes_the_records_of_the_files_redone_alone(tiny_model_dir, songs, tmp_path):
    """The files in flight when a run was killed are analysed again in a child process; its records must be the
    main process's kind, field for field and in the same order, or the CSV refused them ("columns in another order")
    and the job could not finish."""
    output = tmp_path / "out.csv"
    args = ["--model", str(tiny_model_dir), "--harmony-ensemble", "1", "-o", str(output)]
    assert main(["predict", str(songs[0]), *args]) == 0
    parts = Path(f"{output}.parts")
    parts.mkdir()
    (parts / "rank-0.inflight").write_text(json.dumps({"key": str(songs[1]), "input": str(songs[1]), "pid": 1}) + "\n")
    assert main(["predict", str(songs[0]), str(songs[1]), str(songs[2]), *args]) == 0
    with output.open(newline="") as file:
        rows = list(csv.reader(file))
    assert [row[0] for row in rows] == ["file", *map(str, songs[:3])] and len({len(row) for row in rows}) == 1
    assert rows[0][-2:] == ["audio_warning", "options"]


def test_records_a_killed_run_left_unmerged_are_compared_before_the_model_loads(tiny_model_dir, songs, tmp_path,
                                                                                capsys):
    """A run killed before its merge leaves its records in the parts alone. A rerun with other options (or a newer
    version) used to load the model, merge them and refuse its own first record; then every rerun was refused."""
    output = tmp_path / "out.jsonl"
    args = [str(songs[0]), str(songs[1]), "--model", str(tiny_model_dir), "--harmony-ensemble", "1", "-o", str(output)]
    assert main(["predict", *args]) == 0
    parts = Path(f"{output}.parts")
    parts.mkdir()
    record = json.loads(output.read_text().splitlines()[0])
    output.unlink()  # killed before the merge: its records are in its part alone
    (parts / "rank-0.jsonl").write_text(json.dumps(record) + "\n")
    capsys.readouterr()
    assert main(["predict", *args, "--top-k", "3"]) == 2
    said = capsys.readouterr().err
    assert "(what a killed run left unmerged in its .parts folder) holds records made with" in said, said
    assert "loading model" not in said and not output.exists()
    (parts / "rank-0.jsonl").write_text(json.dumps({k: v for k, v in record.items() if k != "audio_warning"}) + "\n")
    assert main(["predict", *args]) == 2
    assert "holds records of an older version of music2emo, without the audio_warning" in capsys.readouterr().err
    (parts / "rank-0.jsonl").write_text(json.dumps(record) + "\n")  # the same kind: kept, and the job finishes
    assert main(["predict", *args]) == 0 and [line["file"] for line in jsonl(output)] == [str(songs[0]), str(songs[1])]


def test_a_rerun_with_nothing_to_analyse_merges_what_a_killed_run_left_and_ends(tiny_model_dir, songs, tmp_path,
                                                                                  capsys):
    """From a review: killed after its last record but before the merge, a job left every record in its parts; the
    rerun, having nothing to analyse, removed them (exit 0, no output). With several processes and nothing to do at
    all, the main process waited for the others' end markers forever."""
    args = [str(songs[0]), str(songs[1]), "--model", str(tiny_model_dir), "--harmony-ensemble", "1"]
    reference = tmp_path / "one.jsonl"
    assert main(["predict", *args, "-o", str(reference)]) == 0
    output = tmp_path / "out.jsonl"
    parts = Path(f"{output}.parts")
    parts.mkdir()
    (parts / "rank-1.jsonl").write_text(reference.read_text())  # every record, none merged
    capsys.readouterr()
    assert main(["predict", *args, "-o", str(output)]) == 0
    assert jsonl(output) == jsonl(reference) and not parts.exists()

    two = subprocess.run(_predict_command(2, *args, "-o", str(output)), env=_env(), cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)  # all done: it ends, saying so
    assert two.returncode == 0 and "2 file(s) already in" in two.stderr, two.stderr[-3000:]
    assert jsonl(output) == jsonl(reference)


def test_a_file_in_flight_when_a_run_died_stays_a_suspect_until_it_is_analysed(tmp_path):
    """From a review: the in-flight markers were removed when the next run planned, so a run stopped before it
    marked the suspect again (killed while the model loaded) left no trace, and the one after analysed it in the main
    process: a file that crashes the analysis could take the job down twice."""
    from music2emo_hf.jobs import Job

    output = tmp_path / "out.jsonl"
    parts = Path(f"{output}.parts")
    parts.mkdir()
    (parts / "rank-0.inflight").write_text(json.dumps({"key": "/b.wav", "input": "/b.wav", "pid": 1}) + "\n")
    keys = ["/a.wav", "/b.wav", "/c.wav"]
    for _ in range(2):  # planned, then stopped before anything is analysed: twice
        job = Job(str(output))
        assert job.plan(keys, lambda key: 1.0).suspects == {"/b.wav"}
        job.release()
    output.write_text(json.dumps({"file": "/b.wav"}) + "\n")  # analysed at last
    job = Job(str(output))
    assert job.plan(keys, lambda key: 1.0).suspects == set()
    job.release()


def _parent_of(pid: int) -> int | None:
    """The parent pid of a live process, from /proc; None once it is gone or a zombie."""
    try:
        state, parent = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:2]
    except (OSError, ValueError):
        return None
    return None if state == "Z" else int(parent)


def _a_run_killed_while_its_child_analyses_the_suspect(args: list[str], suspect: str, flag: Path, parts: Path) -> None:
    """kill -9 of a run while the file in flight at a crash is analysed alone in its child: the child ends too (it
    used to run on for nobody), its temporary files are in the job's parts (removed when the job ends; they were
    left in /tmp), and the file is still the suspect."""
    run = subprocess.Popen(_predict_command(1, *args), env=_env(MUSIC2EMO_TEST_HANG_ON=suspect,
                                                                MUSIC2EMO_TEST_HANG_FLAG=str(flag)),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not flag.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    child = int(flag.read_text()) if flag.exists() else None
    try:
        assert child is not None and _parent_of(child) == run.pid, "the rerun analysed the suspect in no child"
        assert f"--output\0{parts}{os.sep}music2emo-alone-" in Path(f"/proc/{child}/cmdline").read_text()
        run.kill()
        run.wait()
        deadline = time.monotonic() + 30
        while _parent_of(child) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _parent_of(child) is None, "the child went on after its run was killed"
    finally:
        run.kill()
        if child and _parent_of(child):
            os.kill(child, signal.SIGKILL)


@pytest.mark.slow
def test_files_that_crash_the_analysis_are_retried_once_alone_then_skipped_and_do_not_bring_each_other_back(
        tiny_model_dir, songs, tmp_path, capsys):
    """A file whose analysis kills the process is tried again once, alone in a child process, then reported and
    skipped. The run that finds the first one crashes it again dies on the second: the first one's mark must outlive
    that run, or the two take turns killing every rerun and the job never ends."""
    output = tmp_path / "moods.jsonl"
    args = [str(songs[0].parent), "--model", str(tiny_model_dir), "-o", str(output), "--harmony-ensemble", "1"]
    crash = _env(MUSIC2EMO_TEST_KILL_ON="s1.wav,s3.wav")

    def run() -> subprocess.CompletedProcess:
        return subprocess.run(_predict_command(1, *args), env=crash, capture_output=True, text=True, timeout=600)

    def skipped_now(song: Path) -> str:
        return f"error: {song}: the analysis crashed on it twice (killed by signal 9); it is skipped"

    first = run()
    assert first.returncode == -signal.SIGKILL  # died on s1

    _a_run_killed_while_its_child_analyses_the_suspect(args, "s1.wav", tmp_path / "waiting", Path(f"{output}.parts"))

    second = run()  # s1 crashes its child and is skipped; then s3 kills the run
    assert second.returncode == -signal.SIGKILL, second.stderr[-3000:]
    assert [line for line in second.stderr.splitlines() if line.startswith("error:")] == [skipped_now(songs[1])]
    third = run()
    assert third.returncode == 1, third.stderr[-3000:]
    assert [line for line in third.stderr.splitlines() if line.startswith("error:")] == [skipped_now(songs[3])]
    assert [Path(record["file"]).name for record in jsonl(output)] == ["s0.wav", "s2.wav", "s4.wav", "s5.wav"]
    assert [(Path(entry["input"]).name, entry.get("crashed")) for entry in jsonl(Path(f"{output}.errors.jsonl"))] == [
        ("s1.wav", True), ("s3.wav", True)]

    assert main(["predict", *args]) == 1  # no fault now, but a crashing file is not tried a third time
    stderr = capsys.readouterr().err
    assert f"skipped: {songs[1]}: it crashed the analysis before" in stderr, stderr
    assert f"skipped: {songs[3]}: it crashed the analysis before" in stderr and "loading model" not in stderr
    assert len(jsonl(output)) == 4 and Path(f"{output}.errors.jsonl").exists()
    assert not Path(f"{output}.parts").exists()


@pytest.mark.slow
def test_the_files_in_flight_at_a_crash_are_retried_in_one_process_not_one_each(tiny_model_dir, songs, tmp_path):
    """Killed with a batch in flight (a preempted GPU job has 16 to 32), the rerun analyses those files one at a time
    in one child process, which loads the model once: a new child only after one that dies, for the files after the
    one that killed it."""
    output = tmp_path / "moods.jsonl"
    args = [str(songs[0].parent), "--model", str(tiny_model_dir), "-o", str(output), "--harmony-ensemble", "1",
            "--batch-size", "3"]
    first = subprocess.run(_predict_command(1, *args), env=_env(MUSIC2EMO_TEST_KILL_ON="s1.wav"),
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == -signal.SIGKILL
    suspects = [Path(json.loads(line)["key"]).name
                for line in Path(f"{output}.parts/rank-0.inflight").read_text().splitlines()]
    assert suspects[:2] == ["s0.wav", "s1.wav"]  # taken as the batch was read ahead: s1 and the ones before it
    after = len(suspects) > 2  # in flight after s1 too: a second child takes them
    starts = tmp_path / "starts"
    second = subprocess.run(_predict_command(1, *args), capture_output=True, text=True, timeout=600,
                            env=_env(MUSIC2EMO_TEST_KILL_ON="s1.wav", MUSIC2EMO_TEST_STARTS=str(starts)))
    assert second.returncode == 1, second.stderr[-3000:]
    assert len(starts.read_text().splitlines()) == 2 + after  # this run, the child that died on s1, one for the rest
    assert [Path(record["file"]).name for record in jsonl(output)] == ["s0.wav", "s2.wav", "s3.wav", "s4.wav",
                                                                       "s5.wav"]
    assert [(Path(entry["input"]).name, entry.get("crashed")) for entry in jsonl(Path(f"{output}.errors.jsonl"))] == [
        ("s1.wav", True)]


def test_a_full_disk_under_the_jobs_bookkeeping_stops_the_run_naming_the_file(tmp_path):
    """The in-flight marker and the errors list are written as the run goes; on a full disk (/dev/full, a device that
    always is), what could not be written and what to do, not a bare OSError."""
    from types import SimpleNamespace

    from music2emo_hf.jobs import Job, _write_now

    full = r"cannot write /dev/full \(No space left on device\); make room and run the same command again to go on"
    with pytest.raises(CommandError, match=full):
        _write_now(Path("/dev/full"), '{"key": "/music/a.wav"}\n')
    job, shown = Job(None), []
    with pytest.raises(CommandError, match=full):  # a failure added to this process's list as the run goes
        job._fail("/music/a.wav", "/music/a.wav", "not audio", False, Path("/dev/full"),
                  SimpleNamespace(write=lambda text, file: shown.append(text)))
    assert shown == ["error: /music/a.wav: not audio"]


def test_an_output_in_a_folder_that_cannot_be_written_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    """A writable output file in a read-only folder: no lock, no parts folder can be made beside it (as a user
    without root finds it; root writes anywhere, so the folder's refusal is made here by os.open)."""
    from music2emo_hf import jobs

    output = tmp_path / "moods.jsonl"
    output.write_text("")
    real_open = os.open

    def read_only_folder(path, flags, *args):
        if os.path.dirname(os.fspath(path)) == str(tmp_path) and flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(jobs.os, "open", read_only_folder)
    with pytest.raises(CommandError, match=f"--output {output}: cannot take its lock file {output}.lock "
                                           r"\(Permission denied\); choose an output in a folder you can write"):
        jobs.Job(str(output))
