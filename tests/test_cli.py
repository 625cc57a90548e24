"""The `music2emo` command on real files: as users run it (a real subprocess) where the process itself matters (its
stderr, its environment), and in this process (`main`) for the rest, which is the same code without the 8 s start."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import soundfile as sf
import torch

from music2emo_hf import DEFAULT_MODEL_ID
from music2emo_hf.cli import main
from music2emo_hf.hub import ModelLoadError, load_pipeline
from music2emo_hf.pipeline_music2emo import usable_cores
from music2emo_hf.runtimes import installed

from .conftest import ROOT, TINY_CONFIG, jsonl, mood_scores, require_fixtures, tone, without_root_reading_rights

CLI = [sys.executable, "-m", "music2emo_hf.cli"]


def run(*args: str, cwd: Path | None = None, timeout: int = 600, offline: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("HF_HUB_OFFLINE", None)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


def predict_here(capsys, *args: str) -> tuple[int, str]:
    """`music2emo predict ARGS` run by `main` in this process: its exit status and what it wrote to stderr."""
    capsys.readouterr()
    status = main(["predict", *args])
    return status, capsys.readouterr().err


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    """A folder like a user's: real CC-BY clips in nested folders, and one non-audio file that must be ignored."""
    source = require_fixtures("emomusic", "audio")
    root = tmp_path_factory.mktemp("library")
    for i, clip in enumerate(sorted(source.glob("*.mp3"))):
        target = root / ("albums/a" if i % 2 else "singles") / clip.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(clip, target)
    (root / "singles" / "cover.txt").write_text("not audio")
    return root


@pytest.mark.slow
def test_predict_over_a_folder_of_real_clips(tiny_model_dir, library, tmp_path):
    out = tmp_path / "moods.jsonl"
    result = run("predict", str(library), "--model", str(tiny_model_dir), "--output", str(out), "--top-k", "3",
                 "--harmony-ensemble", "1")
    assert result.returncode == 0, result.stderr
    rows = jsonl(out)
    assert sorted(Path(r["file"]).name for r in rows) == sorted(p.name for p in library.rglob("*.mp3"))
    for row in rows:
        assert len(row["moods"]) == 3 and 1.0 <= row["valence"] <= 9.0
        assert row["warning"].startswith("untrained")
    assert "untrained model" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_the_three_doors_agree(tiny_model_dir, tiny_pipeline, tmp_path, capsys):
    clip = require_fixtures("emomusic", "audio", "7.mp3")
    out = tmp_path / "one.jsonl"
    # two harmony workers on the command line, one in the pipeline (both on the CPU): the same answer
    assert predict_here(capsys, str(clip), "--model", str(tiny_model_dir), "-o", str(out), "--harmony-workers", "2",
                        "--device", "cpu")[0] == 0
    cli = jsonl(out)[0]
    direct = tiny_pipeline(str(clip))
    assert cli["file"] == os.path.realpath(clip)  # its real path (../shared may be a link)
    assert cli["valence"] == pytest.approx(direct["valence"], abs=1e-5)
    cli_scores = mood_scores(cli)
    for mood in direct["moods"]:
        assert cli_scores[mood["label"]] == pytest.approx(mood["score"], abs=1e-5)


@pytest.mark.slow
def test_bad_files_are_reported_and_the_run_goes_on(tiny_model_dir, tmp_path, write_wav, capsys):
    good = write_wav("good.wav", tone(2.0))
    (tmp_path / "empty.mp3").write_bytes(b"")
    (tmp_path / "notes.mp3").write_text("shopping list\n" * 50)
    mp3 = require_fixtures("emomusic", "audio", "8.mp3").read_bytes()
    (tmp_path / "truncated.mp3").write_bytes(mp3[: len(mp3) // 2])
    (tmp_path / "garbled.mp3").write_bytes(mp3[:2000] + bytes(range(256)) * 200 + mp3[60000:])
    (tmp_path / "empty_folder").mkdir()
    (tmp_path / "loop.wav").symlink_to(tmp_path / "loop.wav")
    out = tmp_path / "out.jsonl"
    status, stderr = predict_here(
        capsys, str(good), str(tmp_path / "empty.mp3"), str(tmp_path / "notes.mp3"), str(tmp_path / "truncated.mp3"),
        str(tmp_path / "garbled.mp3"),
        str(tmp_path / "missing.wav"), str(tmp_path / "empty_folder"), str(tmp_path / "missing.wav"),
        "https://example.org/song.mp3", str(tmp_path / "loop.wav"), "-", "--model", str(tiny_model_dir),
        "--output", str(out),
    )
    assert status == 1
    assert "Traceback" not in stderr
    assert sum("missing.wav" in line for line in stderr.splitlines()) == 1  # given twice, one problem
    for name, reason in [("empty.mp3", "empty"), ("notes.mp3", "not audio: it could not be decoded"),
                         ("missing.wav", "no such file"), ("empty_folder", "no audio files"),
                         ("song.mp3", "a URL: only local files are read; download it first"),
                         ("loop.wav", "a symbolic link that leads back to itself (a loop of links); point it at a file"),
                         ("-: ", "audio is not read from the standard input; save it to a file and name that")]:
        assert any(name in line and reason in line for line in stderr.splitlines()), (name, stderr)
    written = sorted(Path(r["file"]).name for r in jsonl(out))
    assert {"good.wav", "truncated.mp3"} <= set(written) <= {"good.wav", "truncated.mp3", "garbled.mp3"}
    assert ("garbled.mp3" in written) != any("garbled.mp3" in line for line in stderr.splitlines())
    failed = {Path(entry["input"]).name for entry in jsonl(Path(f"{out}.errors.jsonl"))}
    assert {"empty.mp3", "notes.mp3", "missing.wav", "empty_folder", "song.mp3"} <= failed  # what to look at
    assert "good.wav" not in failed


def test_a_file_name_with_control_characters_is_reported_on_one_line(tiny_model_dir, tmp_path, capsys):
    """A newline in a name made one error read as two lines (and an escape sequence would reach the terminal)."""
    odd = tmp_path / "a\nerror: b\x1b[31m.wav"
    odd.write_text("not audio\n" * 100)
    status, stderr = predict_here(capsys, str(odd), "--model", str(tiny_model_dir), "-o", str(tmp_path / "out.jsonl"))
    assert status == 1
    errors = [line for line in stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith(f"error: {tmp_path}/a\\nerror: b\\x1b[31m.wav: not audio: "
                                                     "it could not be decoded"), errors
    assert jsonl(Path(f"{tmp_path / 'out.jsonl'}.errors.jsonl"))[0]["input"] == str(odd)  # the name itself


def test_audio_of_a_type_not_decoded_here_is_reported_with_the_way_around(tiny_model_dir, tmp_path, write_wav,
                                                                          capsys):
    """An iTunes folder's .m4a files (or a lossless collection's WavPack) are not passed over in silence: each is
    reported and listed, with how to convert it; an MP4 or WavPack file named otherwise is recognised when decoded.
    Other files (covers, playlists) are not audio; a WAV named .wave is. The files were encoded by FFmpeg
    (tests/undecoded/make.py), as a music library's are."""
    encoded = ROOT / "tests" / "undecoded"
    write_wav("album/01.wav", tone(2.0))
    shutil.copy(encoded / "tone.m4a", tmp_path / "album" / "02.m4a")
    shutil.copy(encoded / "tone.wv", tmp_path / "album" / "03.wv")
    sf.write(tmp_path / "album" / "04.wave", tone(2.0), 24000, format="WAV")
    shutil.copy(encoded / "tone.wv", tmp_path / "lossless.flac")
    (tmp_path / "album" / "cover.jpg").write_bytes(b"\xff\xd8\xff")
    shutil.copy(encoded / "tone.m4a", tmp_path / "renamed.mp3")
    shutil.copy(encoded / "tone.aac", tmp_path / "tune.aac")
    shutil.copy(encoded / "tone.wma", tmp_path / "old.wma")
    out = tmp_path / "out.jsonl"
    status, stderr = predict_here(capsys, str(tmp_path / "album"), str(tmp_path / "renamed.mp3"),
                                  str(tmp_path / "tune.aac"), str(tmp_path / "old.wma"),
                                  str(tmp_path / "lossless.flac"), "--model", str(tiny_model_dir), "-o", str(out))
    assert status == 1 and [Path(r["file"]).name for r in jsonl(out)] == ["01.wav", "04.wave"]
    failed = {Path(entry["input"]).name: entry["error"] for entry in jsonl(Path(f"{out}.errors.jsonl"))}
    assert failed == {
        "02.m4a": ".m4a audio is not decoded by this package: convert it to FLAC or WAV first (e.g. `ffmpeg -i "
                  "IN.m4a OUT.flac`)",
        "renamed.mp3": "an MP4/M4A file (AAC or ALAC audio), which this package does not decode: convert it to FLAC "
                       "or WAV first (e.g. `ffmpeg -i IN.m4a OUT.flac`).",
        "tune.aac": "an AAC file, which this package does not decode: convert it to FLAC or WAV first (e.g. `ffmpeg "
                    "-i IN.aac OUT.flac`).",
        "old.wma": "a WMA file, which this package does not decode: convert it to FLAC or WAV first (e.g. `ffmpeg -i "
                   "IN.wma OUT.flac`).",
        "03.wv": ".wv audio is not decoded by this package: convert it to FLAC or WAV first (e.g. `ffmpeg -i "
                 "IN.wv OUT.flac`)",
        "lossless.flac": "a WavPack file, which this package does not decode: convert it to FLAC or WAV first (e.g. "
                         "`ffmpeg -i IN.wv OUT.flac`).",
    }
    assert "cover.jpg" not in stderr


def test_a_folders_file_the_walk_passes_over_is_analysed_when_named_as_well(tiny_model_dir, tmp_path, write_wav,
                                                                           capsys):
    """A WAV saved as .m4a: the folder's walk reports its extension, the file named on its own is decoded by its
    content. It was both written and reported failed ("2 file(s) analysed, 1 failed")."""
    write_wav("album/01.wav", tone(2.0))
    named = tmp_path / "album" / "02.m4a"
    sf.write(named, tone(2.0, freq=330.0), 24000, format="WAV")
    out = tmp_path / "out.jsonl"
    status, stderr = predict_here(capsys, str(tmp_path / "album"), str(named), "--model", str(tiny_model_dir),
                                  "-o", str(out))
    assert status == 0 and "2 file(s) analysed, 0 failed" in stderr and "error:" not in stderr, stderr
    assert [Path(r["file"]).name for r in jsonl(out)] == ["01.wav", "02.m4a"]


def test_labels_for_a_model_without_a_projector_are_refused_as_the_option(tiny_model_dir, tmp_path, write_wav, capsys):
    status, stderr = predict_here(capsys, str(write_wav("x.wav", tone(1.0))), "--model", str(tiny_model_dir),
                                  "--labels", "calm,tense", "-o", str(tmp_path / "out.jsonl"))
    assert status == 2 and "--labels: this model has no zero-shot projector" in stderr
    assert "candidate_labels" not in stderr and not (tmp_path / "out.jsonl").exists()


def test_thresholds_per_mood_keep_the_moods_not_named_and_an_unknown_mood_is_refused(tiny_model_dir, tmp_path,
                                                                                   write_wav, capsys):
    song = str(write_wav("x.wav", tone(1.0)))
    status, stderr = predict_here(capsys, song, "--model", str(tiny_model_dir), "--threshold", "sad=1, happy=1",
                                  "-o", str(tmp_path / "out.jsonl"))
    assert status == 0, stderr
    [record] = jsonl(tmp_path / "out.jsonl")
    assert len(record["moods"]) == 54 and not {"sad", "happy"} & {mood["label"] for mood in record["moods"]}
    assert record["options"]["--threshold"] == {"happy": 1.0, "sad": 1.0}

    status, stderr = predict_here(capsys, song, "--model", str(tiny_model_dir), "--threshold", "sad=0.3,blue=0.2",
                                  "-o", str(tmp_path / "other.jsonl"))
    assert status == 2 and "--threshold for unknown labels ['blue']; this model's labels are [" in stderr
    assert not (tmp_path / "other.jsonl").exists()


def test_folders_are_walked_through_linked_folders_once(tmp_path):
    """A linked folder is walked (music libraries are often assembled from links); a link back up the tree is not
    followed around the loop."""
    from music2emo_hf.cli import iter_audio_files

    (tmp_path / "disk" / "album").mkdir(parents=True)
    (tmp_path / "disk" / "album" / "song.flac").write_bytes(b"")
    library = tmp_path / "library"
    library.mkdir()
    (library / "own.wav").write_bytes(b"")
    for name in ("field.w64", "long.rf64", "mac.caf", "sun.au", "notes.txt"):  # every container libsndfile reads
        (library / "formats" / name).parent.mkdir(exist_ok=True)
        (library / "formats" / name).write_bytes(b"")
    (library / "album").symlink_to(tmp_path / "disk" / "album", target_is_directory=True)
    (library / "album" / "back").symlink_to(library, target_is_directory=True)
    problems = []
    found = list(iter_audio_files([str(library)], lambda path, message: problems.append((path, message))))
    assert found == [str(library / "album" / "song.flac"),
                     *(str(library / "formats" / name) for name in ("field.w64", "long.rf64", "mac.caf", "sun.au")),
                     str(library / "own.wav")] and not problems


def test_a_library_copied_from_a_mac_is_analysed_without_its_hidden_companions(tiny_model_dir, write_wav, tmp_path,
                                                                                capsys):
    """macOS writes a `._NAME` AppleDouble file (its metadata, not audio) beside each file on a drive of another
    format, and zips a `__MACOSX` folder of them: each was reported as not audio, and the run exited 1."""
    library = write_wav("library/song.wav", tone(1.0)).parent
    apple_double = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(4050)  # its magic and version
    (library / "._song.wav").write_bytes(apple_double)
    (library / "__MACOSX").mkdir()
    (library / "__MACOSX" / "._song.wav").write_bytes(apple_double)
    write_wav("library/.Trashes/501/deleted.wav", tone(1.0))
    output = tmp_path / "moods.jsonl"
    assert main(["predict", str(library), "--model", str(tiny_model_dir), "--output", str(output)]) == 0, \
        capsys.readouterr().err
    assert [Path(record["file"]).name for record in jsonl(output)] == ["song.wav"]
    assert main(["predict", str(library / "._song.wav"), "--model", str(tiny_model_dir)]) == 1  # named: tried
    assert "._song.wav: not audio" in capsys.readouterr().err
    (library / "song.wav").unlink()  # hidden files only: the folder's report says they were passed over
    assert main(["predict", str(library), "--model", str(tiny_model_dir)]) == 1
    assert "in this folder; 3 hidden file(s) or folder(s) passed over (names starting with a dot)" in \
        capsys.readouterr().err


def test_a_file_retried_alone_keeps_a_name_that_looks_like_an_option(tmp_path, monkeypatch):
    """The command line of a file analysed again in a process of its own (after a crash) names it so that a name
    such as `-a.mp3` is read as the file, with the run's options, a value starting with "-" among them, and its
    records say the same options."""
    from music2emo_hf.cli import _argv_alone, build_parser, recorded_options
    from music2emo_hf.jobs import child_command

    def child_args(args, *paths):
        return build_parser().parse_args(child_command(_argv_alone(args, "cpu"), paths, "out.jsonl")[3:])

    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["predict", "--model", "m", "--top-k", "3", "--harmony", "--labels=-calm, tense",
                                      "--threshold", "sad=0.3, happy=.5", "--batch-size", "8", "--", "-a.mp3"])
    again = child_args(args, "-a.mp3", "b.mp3")
    zero = build_parser().parse_args(["predict", "x.wav", "--threshold", "0"])  # a value that is false, kept
    assert recorded_options(child_args(zero, "x.wav")) == {"--threshold": 0.0}
    assert again.paths == [str(tmp_path / "-a.mp3"), str(tmp_path / "b.mp3")] and again.output == "out.jsonl"
    assert (again.model, again.top_k, again.harmony, again.labels, again.device) == ("m", 3, True, "-calm, tense",
                                                                                     "cpu")
    assert again.batch_size == 1  # one file at a time: the one a crash comes from is known
    assert recorded_options(again) == recorded_options(args)


def test_options_are_recorded_in_one_spelling(tmp_path):
    """Options that ask for the same analysis are recorded alike, so a rerun spelling them otherwise goes on; a
    rerun with others is refused with both command lines, quoted as a shell needs them."""
    from music2emo_hf.cli import _check_same_options, build_parser, recorded_options
    from music2emo_hf.jobs import CommandError, RecordWriter

    model = tmp_path / "model"
    model.mkdir()

    def recorded(*argv: str) -> dict:
        return recorded_options(build_parser().parse_args(["predict", "x.wav", *argv]))

    assert recorded("--labels", "calm, tense", "--resampler", "soxr", "--harmony-ensemble", "5", "--threshold", ".5",
                    "--model", f"{tmp_path}/../{tmp_path.name}/model/") == recorded(
        "--labels", "calm,tense,calm", "--threshold", "0.50", "--model", str(model)) == {
        "--model": str(model), "--threshold": 0.5, "--labels": ["calm", "tense"]}
    # The default model named in full is the default; another released checkpoint is named as its answers name it.
    assert recorded("--model", "amaai-lab/music2emo:J_all") == recorded("--model", "AMAAI-Lab/music2emo@main") == {}
    assert recorded("--model", "amaai-lab/music2emo:saved_models/D_all.ckpt") == recorded(
        "--model", "amaai-lab/music2emo:D_all@main") == {"--model": "amaai-lab/music2emo:D_all"}
    assert recorded("--model", "amaai-lab/music2emo@v1") == {"--model": "amaai-lab/music2emo:J_all@v1"}
    with pytest.raises(CommandError, match="--model amaai-lab/music2emo:J: amaai-lab/music2emo has no checkpoint"):
        recorded("--model", "amaai-lab/music2emo:J")
    assert recorded("--threshold", "sad=.3, happy=0.50") == recorded("--threshold", "happy=0.5,sad=0.3") == {
        "--threshold": {"happy": 0.5, "sad": 0.3}}
    assert recorded("--labels", "calm", "--hypothesis-template", "a song that is {}") == {
        "--labels": ["calm"], "--hypothesis-template": "a song that is {}"}  # without --labels it is refused
    output = tmp_path / "out.jsonl"
    output.write_text(json.dumps({"file": "/x.wav", "audio_warning": None,
                                  "options": recorded("--labels", "calm, very tense")}) + "\n")
    with pytest.raises(CommandError, match=re.escape(
            "holds records made with --labels 'calm,very tense'; this run has --top-k 3. Choose another output")):
        _check_same_options(RecordWriter(str(output)), recorded("--top-k", "3"))
    with pytest.raises(CommandError, match=re.escape("this run has --threshold happy=0.5,sad=0.3. Choose")):
        _check_same_options(RecordWriter(str(output)), recorded("--threshold", "sad=0.3,happy=0.5"))
    # A released name recorded as typed (before b72e00a) is read in today's spelling: the same run goes on.
    for typed, today in (("amaai-lab/music2emo:J_all@main", ()), ("amaai-lab/music2emo:D_all.ckpt",
                                                                   ("--model", "amaai-lab/music2emo:D_all"))):
        output.write_text(json.dumps({"file": "/x.wav", "audio_warning": None, "options": {"--model": typed}}) + "\n")
        _check_same_options(RecordWriter(str(output)), recorded(*today))
    output.write_text(json.dumps({"file": "/x.wav", "options": {}}) + "\n")  # before records said if audio was whole
    with pytest.raises(CommandError, match="holds records of an older version of music2emo, without the audio_warning"):
        _check_same_options(RecordWriter(str(output)), {})
    output.write_text(json.dumps({"file": "/x.wav", "valence": 5.0}) + "\n")
    with pytest.raises(CommandError, match="records without the options they were made with"):
        _check_same_options(RecordWriter(str(output)), {})


@pytest.mark.slow
@pytest.mark.parametrize("stop,status,said", [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")])
def test_ctrl_c_twice_still_stops_cleanly_and_the_rerun_finishes(tiny_model_dir, tmp_path, write_wav, capsys, stop,
                                                                  status, said):
    """A second Ctrl-C during the clean-up after the first is ignored (it used to abort the process with exit 134);
    the run exits with 130, and running the same command again completes the output, each file once. A kill
    (SIGTERM, twice too) ends it as cleanly, with 143."""
    import signal
    import time

    for i in range(6):
        write_wav(f"music/t{i}.wav", tone(12.0, freq=200 + 40 * i))
    out = tmp_path / "out.jsonl"
    args = [str(tmp_path / "music"), "--model", str(tiny_model_dir), "-o", str(out), "--harmony", "--harmony-ensemble", "1"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([*CLI, "predict", *args], stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 300
    while not (out.exists() and out.stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.1)  # the first record is written: the run is well under way
    process.send_signal(getattr(signal, stop))
    time.sleep(0.3)
    process.send_signal(getattr(signal, stop))
    stderr = process.communicate(timeout=300)[1]
    assert process.returncode == status and f"{said}; run the same command again" in stderr, stderr[-2000:]
    assert "Traceback" not in stderr and "terminate called" not in stderr  # C++ aborting, with exit 134
    status, stderr = predict_here(capsys, *args)  # the same command again
    assert status == 0 and "file(s) already in" in stderr, stderr[-2000:]
    assert sorted(Path(r["file"]).name for r in jsonl(out)) == [f"t{i}.wav" for i in range(6)]


@pytest.mark.parametrize("stop,status,said", [(KeyboardInterrupt, 130, "interrupted"), (SystemExit(143), 143,
                                                                                               "terminated")])
def test_how_a_run_ended_is_said_while_a_decoding_thread_hides_descriptor_2(capfd, monkeypatch, stop, status, said):
    """The decoders write notes to descriptor 2, so a decoding thread points it at /dev/null for a moment; the line
    saying a run was stopped, written then, was lost (seen: exit 130 and no "interrupted" line)."""
    import threading

    from music2emo_hf import audio, cli

    inside, leave = threading.Event(), threading.Event()

    def decoding():
        with audio._decoder_notes_hidden():
            inside.set()
            leave.wait(30)

    thread = threading.Thread(target=decoding)

    def stopped_while_decoding(args):
        thread.start()
        inside.wait(30)
        raise stop

    monkeypatch.setattr(cli, "predict", stopped_while_decoding)
    monkeypatch.setattr(sys, "stderr", open(2, "w", closefd=False))  # as in a command: Python's stderr on descriptor 2
    try:
        with pytest.raises(SystemExit) if isinstance(stop, SystemExit) else contextlib.nullcontext():
            assert main(["predict", "song.wav"]) == status
    finally:
        leave.set()
        thread.join()
    assert f"music2emo: {said}; run the same command again" in capfd.readouterr().err


def test_batched_predict_writes_what_one_at_a_time_writes(tiny_model_dir, tmp_path, write_wav, capsys, monkeypatch):
    """--batch-size N: N files decoded and analysed together, with the answers each gets alone."""
    from music2emo_hf.pipeline_music2emo import MusicEmotionPipeline

    asked = []
    stream = MusicEmotionPipeline.stream

    def spied(self, inputs, batch_size=1, **options):
        asked.append(batch_size)
        return stream(self, inputs, batch_size, **options)

    monkeypatch.setattr(MusicEmotionPipeline, "stream", spied)
    files = [str(write_wav(f"t{i}.wav", tone(3.0 + 6 * i, freq=200 + 50 * i))) for i in range(4)]
    (tmp_path / "notes.mp3").write_text("shopping list\n" * 50)
    files.insert(2, str(tmp_path / "notes.mp3"))
    outputs = {size: tmp_path / f"batch{size}.jsonl" for size in (1, 3)}
    for size, out in outputs.items():
        status, stderr = predict_here(capsys, *files, "--model", str(tiny_model_dir), "-o", str(out), "--batch-size",
                                      str(size), "--harmony-ensemble", "1")
        assert status == 1 and "notes.mp3: not audio" in stderr and "4 file(s) analysed, 1 failed" in stderr
    assert asked == [1, 3]
    one, batched = (jsonl(out) for out in outputs.values())
    assert [r["file"] for r in batched] == [r["file"] for r in one] == files[:2] + files[3:]
    for alone, together in zip(one, batched):
        assert together["valence"] == pytest.approx(alone["valence"], abs=1e-5)
        assert mood_scores(together) == pytest.approx(mood_scores(alone), abs=1e-5)


def test_rerunning_skips_finished_files_and_redoes_a_cut_off_record(tiny_model_dir, tmp_path, write_wav, capsys):
    files = [write_wav(f"t{i}.wav", tone(1.0 + i, freq=200 + 50 * i)) for i in range(3)]
    out = tmp_path / "resume.jsonl"
    assert predict_here(capsys, *map(str, files[:2]), "--model", str(tiny_model_dir), "-o", str(out))[0] == 0
    first = jsonl(out)
    with open(out, "a") as handle:  # as if the run had been killed while writing the third record
        handle.write('{"file": "' + str(files[2]) + '", "val')
    status, stderr = predict_here(capsys, *map(str, files), "--model", str(tiny_model_dir), "-o", str(out))
    assert status == 0, stderr
    assert "2 file(s) already in" in stderr
    rows = jsonl(out)
    assert rows[:2] == first and [r["file"] for r in rows] == [str(f) for f in files]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_file_name_that_is_not_utf8_is_analysed_recorded_and_skipped_on_rerun(tiny_model_dir, tmp_path, capsys,
                                                                                   suffix):
    import soundfile as sf

    latin1 = os.fsencode(tmp_path) + b"/caf\xe9.wav"  # written by an old Latin-1 system: not UTF-8
    sf.write(latin1, tone(1.0), 24000)
    name, out = os.fsdecode(latin1), tmp_path / f"moods{suffix}"
    for done in (0, 1):
        status, stderr = predict_here(capsys, str(tmp_path), "--model", str(tiny_model_dir), "-o", str(out))
        assert status == 0 and f"{1 - done} file(s) analysed, 0 failed" in stderr, stderr
    if suffix == ".jsonl":  # the name as JSON escapes (valid UTF-8), which read back as the same name
        assert out.read_bytes().isascii() and jsonl(out)[0]["file"] == name
    else:  # the byte as Python escapes it, in a file every CSV reader takes
        import pandas

        assert pandas.read_csv(out)["file"].tolist() == [os.fsdecode(tmp_path) + "/caf\\xe9.wav"]


def test_a_name_holding_a_backslash_escape_as_text_is_not_taken_for_a_byte_in_csv(tiny_model_dir, tmp_path, capsys):
    import pandas
    import soundfile as sf

    folder = os.fsencode(tmp_path / "album")
    os.mkdir(folder)
    for name in (b"caf\xe9.wav", b"caf\\xe9.wav"):  # the byte E9; the four characters \xe9
        sf.write(folder + b"/" + name, tone(1.0), 24000)
    out = tmp_path / "moods.csv"
    for done in (0, 2):
        status, stderr = predict_here(capsys, os.fsdecode(folder), "--model", str(tiny_model_dir), "-o", str(out))
        assert status == 0 and f"{2 - done} file(s) analysed, 0 failed" in stderr, stderr
    written = pandas.read_csv(out)["file"].tolist()
    assert sorted(written) == [os.fsdecode(folder) + "/caf\\x5cxe9.wav", os.fsdecode(folder) + "/caf\\xe9.wav"]


def test_a_line_written_while_a_decoder_hides_its_notes_still_reaches_stderr():
    """A decoding thread points descriptor 2 at /dev/null while a file opens; the command's lines, written from other
    threads meanwhile, go out by a descriptor of their own (in a process of its own: its real descriptor 2)."""
    script = (
        "import sys, threading\n"
        "from music2emo_hf import audio, cli\n"
        "hidden, done = threading.Event(), threading.Event()\n"
        "def decoder():\n"
        "    with audio._decoder_notes_hidden():\n"
        "        hidden.set(); done.wait(10)\n"
        "with cli._stderr_apart_from_decoders():\n"
        "    thread = threading.Thread(target=decoder); thread.start(); hidden.wait(10)\n"
        "    print('error: a.mp3: not audio', file=sys.stderr)\n"
        "    done.set(); thread.join()\n"
        "    handler = logging.StreamHandler()  # as a library imported during a command makes one\n"
        "assert sys.stderr is sys.__stderr__\n"
        "logging.getLogger('library').addHandler(handler)\n"
        "logging.getLogger('library').warning('logged after the command')\n"
        "print('after', file=sys.stderr)\n"
    )
    run = subprocess.run([sys.executable, "-c", "import logging\n" + script], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert run.stderr.splitlines()[-3:] == ["error: a.mp3: not audio", "logged after the command", "after"], run.stderr


def test_a_file_cut_short_is_recorded_and_named_in_a_warning(tiny_model_dir, tmp_path, write_wav, capsys):
    whole = write_wav("whole.wav", tone(3.0))
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])  # a copy that stopped half-way
    out = tmp_path / "moods.jsonl"
    status, stderr = predict_here(capsys, str(whole), str(cut), "--model", str(tiny_model_dir), "-o", str(out))
    assert status == 0 and "2 file(s) analysed, 0 failed" in stderr, stderr
    assert f"warning: {cut}: cut short: its header announces 3.0 s of audio and the file ends before that" in stderr
    said = ("cut short: its header announces 3.0 s of audio and the file ends before that (not downloaded or copied "
            "whole); the 1.5 s it holds is analysed.")
    assert [(record["file"], record["audio_warning"]) for record in jsonl(out)] == [(str(whole), None),
                                                                                      (str(cut), said)]
    long = write_wav("long.wav", tone(60.0))
    long_cut = tmp_path / "long-cut.wav"
    long_cut.write_bytes(long.read_bytes()[: long.stat().st_size // 2])  # over a batch's limit: decoded twice
    table = tmp_path / "batched.csv"
    for batch_size in ("2", "1"):  # batched (then alone, being long), and one file at a time: one CSV, resumed
        status, stderr = predict_here(capsys, str(whole), str(cut), str(long_cut), "--model", str(tiny_model_dir),
                                      "-o", str(table), "--batch-size", batch_size)
        assert status == 0 and stderr.count(f"warning: {long_cut}: cut short") == 1, stderr
        if batch_size == "2":
            table.write_text("\n".join(table.read_text().splitlines()[:-1]) + "\n")  # the last one analysed again
    with table.open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["audio_warning"] for row in rows] == ["", said, said.replace("3.0 s", "60.0 s").replace("1.5", "30.0")]


def test_a_model_without_a_mood_head_answers_valence_and_arousal(tiny_model_dir, tmp_path, write_wav, capsys):
    """A teacher trained on DEAM alone, as docs/training.md makes one, is a model `predict` takes."""
    import warnings

    from music2emo_hf import Music2EmoModel
    from music2emo_hf.configuration_music2emo import tasks_for_corpora

    folder = tmp_path / "deam-teacher"
    shutil.copytree(tiny_model_dir, folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = Music2EmoModel.from_pretrained(tiny_model_dir).config
        config.tasks = tasks_for_corpora(["deam"])
        Music2EmoModel(config).save_pretrained(folder)
    song = str(write_wav("song.wav", tone(1.0)))
    for suffix in (".jsonl", ".csv"):
        out = tmp_path / f"va{suffix}"
        status, stderr = predict_here(capsys, song, "--model", str(folder), "-o", str(out))
        assert status == 0, stderr
        row = jsonl(out)[0] if suffix == ".jsonl" else next(csv.DictReader(out.open()))
        assert 1 <= float(row["valence"]) <= 9 and 1 <= float(row["arousal"]) <= 9
        assert not [column for column in row if column.startswith("mood")]


@pytest.mark.slow
def test_a_full_disk_and_a_closed_pipe_stop_the_run_in_plain_words(tiny_model_dir, tmp_path, write_wav):
    """Writing fails as on a full disk (a file-size limit: EFBIG); a reader of stdout that goes away (`| head`)."""
    songs = [str(write_wav(f"p{i}.wav", tone(1.0, freq=220 + 40 * i))) for i in range(3)]
    out = tmp_path / "moods.jsonl"
    limited = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
               "resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000)); from music2emo_hf.cli import main; "
               "sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", limited, "predict", *songs, "--model", str(tiny_model_dir),
                           "--runtime", "torch", "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and f"--output {out}: cannot write (File too large); make room and run the same " \
        "command again" in done.stderr and "Traceback" not in done.stderr
    read, write = os.pipe()
    os.close(read)  # `| head` has gone
    with open(write, "w") as closed, contextlib.redirect_stdout(closed):
        assert main(["predict", songs[0], "--model", str(tiny_model_dir), "--runtime", "torch"]) == 141


def test_chunks_analysed_several_at_a_time_give_the_same_answer(tiny_model_dir, tmp_path, write_wav, capsys,
                                                                monkeypatch):
    """--chunk-batch-size (the GPU figures' chunk_batch_size): a 35 s file's four chunks in one backbone call."""
    from music2emo_hf.pipeline_music2emo import MusicEmotionPipeline

    batches = []
    forward = MusicEmotionPipeline._forward

    def counted(self, model_inputs, **options):
        batches.append(options.get("chunk_batch_size", 1))
        return forward(self, model_inputs, **options)

    monkeypatch.setattr(MusicEmotionPipeline, "_forward", counted)
    song = str(write_wav("long.wav", tone(35.0, freq=300)))
    outputs = {size: tmp_path / f"chunks{size}.jsonl" for size in (None, 4)}
    for size, out in outputs.items():
        extra = ["--chunk-batch-size", str(size)] if size else []
        status, stderr = predict_here(capsys, song, "--model", str(tiny_model_dir), "-o", str(out), "--segments",
                                      "--harmony-ensemble", "1", *extra)
        assert status == 0, stderr
    assert batches == [1, 4]  # the option reaches the backbone's loop
    alone, together = (jsonl(out)[0] for out in outputs.values())
    assert len(together["segments"]) == 4 and together["valence"] == pytest.approx(alone["valence"], abs=1e-5)
    assert mood_scores(together) == pytest.approx(mood_scores(alone), abs=1e-5)
    with pytest.raises(SystemExit) as refused:
        main(["predict", song, "--model", str(tiny_model_dir), "--chunk-batch-size", "0"])
    assert refused.value.code == 2 and "--chunk-batch-size: expected a positive whole number" in capsys.readouterr().err


def test_csv_output_has_one_column_per_mood(tiny_model_dir, tmp_path, write_wav, capsys):
    files = [write_wav(f"c{i}.wav", tone(1.5 + i, freq=300 + 40 * i)) for i in range(3)]
    out = tmp_path / "moods.csv"
    args = ["--model", str(tiny_model_dir), "-o", str(out), "--harmony", "--top-k", "3"]
    status, stderr = predict_here(capsys, *map(str, files[:2]), *args)
    assert status == 0, stderr
    assert predict_here(capsys, *map(str, files), *args)[0] == 0  # resumes: the same columns, one more row
    rows = list(csv.DictReader(out.open()))
    assert [r["file"] for r in rows] == [str(f) for f in files]
    for row in rows:
        scores = [row[c] for c in row if c.startswith("mood:")]
        assert len(scores) == 56 and sum(score != "" for score in scores) == 3
        assert 1.0 <= float(row["valence"]) <= 9.0 and row["key"] and json.loads(row["chords"])


def test_a_rerun_from_another_folder_skips_what_is_done_and_keeps_same_named_files_apart(
        tiny_model_dir, tmp_path, write_wav, capsys, monkeypatch):
    """Records name files by absolute path: two album folders' ./01.wav are two files (the second used to be skipped
    as done), and a rerun naming them from elsewhere finds both done (they used to be analysed again)."""
    albums = [write_wav(f"{name}/01.wav", tone(2.0, freq=freq)).parent for name, freq in (("a", 220), ("b", 330))]
    out = tmp_path / "all.jsonl"
    for album in albums:
        monkeypatch.chdir(album)
        assert predict_here(capsys, ".", "--model", str(tiny_model_dir), "-o", str(out))[0] == 0
    assert [r["file"] for r in jsonl(out)] == [str(album / "01.wav") for album in albums]
    monkeypatch.chdir(tmp_path)
    status, stderr = predict_here(capsys, "a", "b/01.wav", "--model", str(tiny_model_dir), "-o", "all.jsonl")
    assert status == 0 and "2 file(s) already in" in stderr and "loading model" not in stderr
    assert len(jsonl(out)) == 2


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_rerun_with_another_model_or_other_options_is_refused_before_the_model_loads(tiny_model_dir, tmp_path,
                                                                                      write_wav, capsys, monkeypatch,
                                                                                      suffix):
    """Each record names the options it was made with; a rerun with others is refused, even with nothing left to do
    (it used to answer "skipped"), and the output is left as it was. The same model folder named another way is
    the same model."""
    files = [str(write_wav(f"m{i}.wav", tone(1.5, freq=250 + 60 * i))) for i in range(3)]
    out = tmp_path / f"moods{suffix}"
    model = str(tiny_model_dir)
    assert predict_here(capsys, files[0], "--model", model, "--top-k", "3", "-o", str(out))[0] == 0
    written = out.read_text()
    other_model = shutil.copytree(tiny_model_dir, tmp_path / "other-model")
    for inputs, args, now in (
        (files[:2], ["--model", model, "--top-k", "3", "--harmony"], f"--model {model} --top-k 3 --harmony"),
        (files[:2], ["--model", str(other_model), "--top-k", "3"], f"--model {other_model} --top-k 3"),
        (files[:1], ["--model", model], f"--model {model}"),  # nothing left to analyse
    ):
        status, stderr = predict_here(capsys, *inputs, *args, "-o", str(out))
        assert status == 2 and "loading model" not in stderr, stderr
        assert (f"--output {out} holds records made with --model {model} --top-k 3; this run has {now}. Choose "
                "another output, or run with the options that wrote it.") in stderr
        assert out.read_text() == written
    monkeypatch.chdir(tiny_model_dir.parent)
    status, stderr = predict_here(capsys, *files, "--model", f"./{tiny_model_dir.name}", "--top-k", "3", "-o", str(out))
    assert status == 0, stderr
    assert out.read_text().startswith(written) and len(out.read_text().splitlines()) == len(written.splitlines()) + 2


def test_a_model_folder_retrained_in_place_does_not_add_to_the_old_weights_output(tiny_model_dir, tmp_path,
                                                                                    write_wav, capsys):
    import warnings

    from music2emo_hf import Music2EmoModel

    files = [str(write_wav(f"r{i}.wav", tone(1.0, freq=250 + 60 * i))) for i in range(2)]
    folder, out = shutil.copytree(tiny_model_dir, tmp_path / "model"), tmp_path / "moods.jsonl"
    assert predict_here(capsys, files[0], "--model", str(folder), "-o", str(out))[0] == 0
    written = out.read_text()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Music2EmoModel.from_pretrained(folder)
        with torch.no_grad():
            next(model.parameters()).add_(0.5)  # another epoch, written over the same folder
        model.save_pretrained(folder)
    status, stderr = predict_here(capsys, *files, "--model", str(folder), "-o", str(out))
    assert status == 2 and f"the file's records come from {folder} (weights " in stderr
    assert out.read_text() == written


def test_a_file_reached_through_a_link_is_one_file(tiny_model_dir, tmp_path, write_wav, capsys, monkeypatch):
    """Files are named by their real path: one reached directly and through a linked folder is analysed once, and
    `..` after a link is where the link leads (the path's text alone names deep/01.wav, which does not exist)."""
    song = write_wav("album/01.wav", tone(2.0))
    other = write_wav("01.wav", tone(2.0, freq=330.0))
    (tmp_path / "linked-album").symlink_to(song.parent)
    (tmp_path / "deep").mkdir()
    (tmp_path / "deep" / "link").symlink_to(song.parent)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "moods.jsonl"
    status, stderr = predict_here(capsys, "album/01.wav", "linked-album", "deep/link/../01.wav", "--model",
                                  str(tiny_model_dir), "-o", str(out))
    assert status == 0, stderr
    assert [r["file"] for r in jsonl(out)] == [str(song.resolve()), str(other.resolve())]
    status, stderr = predict_here(capsys, "linked-album/01.wav", "--model", str(tiny_model_dir), "-o", str(out))
    assert status == 0 and "1 file(s) already in" in stderr and len(jsonl(out)) == 2


@pytest.mark.parametrize(
    "args,message",
    [
        (["--threshold", "2"], "--threshold: expected a probability in [0, 1], got '2'"),
        (["--threshold", "sad=2"], "--threshold: sad: expected a probability in [0, 1], got '2'"),
        (["--threshold", "sad=0.1,sad=0.2"], "with each mood once (e.g. sad=0.3,happy=0.5); 'sad=0.2' names 'sad' a "
                                             "second time"),
        (["--threshold", "=0.3"], "'=0.3' has no mood before '='"),
        (["--top-k", "0"], "--top-k: expected a positive whole number, got '0'"),
        (["--output", "/no/such/folder/out.jsonl"], "does not exist"),
        (["--output", "out.txt"], ".jsonl (one JSON record per line) or .csv"),
        (["--output", "out.json"], "--output out.json: use a .jsonl (one JSON record per line) or .csv file name"),
        (["--hypothesis-template", "music for {}"], "--hypothesis-template words the --labels; give --labels too"),
        (["--harmony-workers", "0"], "expected a positive whole number"),
        (["--threads", "100000"], f"--threads 100000: this process may run on {usable_cores()} cores; give at most "
                                  f"{usable_cores()}"),
        (["--device", "banana"], "--device banana: not a device name torch knows"),
        (["--device", ""], "--device is empty; give a value, or leave it out for the default"),
        (["--output", ""], "--output is empty; give a value, or leave it out for the standard output"),
        (["--model", ""], "--model is empty; give a value, or leave it out for the default model"),  # a Hub id error
        (["--labels", ",,,"], "error: --labels must be a non-empty string of comma-separated words, got ',,,'."),
        pytest.param(["--device", "cuda"], "--device cuda: this torch", marks=pytest.mark.skipif(
            torch.cuda.is_available(), reason="a CUDA GPU is there")),
        pytest.param(["--device", "mps"], "--device mps: this torch", marks=pytest.mark.skipif(
            torch.backends.mps.is_available(), reason="an Apple GPU is there")),
        (["--precision", "int8", "--runtime", "openvino"], "--runtime openvino cannot run with --device cpu "
         "--precision int8: openvino is not offered in int8 (in int8: onnxruntime, torch); leave --runtime out"),
        (["--precision", "bfloat16", "--runtime", "onnxruntime"], "onnxruntime is not offered in bfloat16"),
    ],
)
def test_bad_options_stop_the_command_with_one_line_before_the_model_loads(write_wav, tmp_path, capsys, args,
                                                                             message):
    """Checked before anything is loaded (the model named does not even exist): the answer comes at once."""
    try:
        status = main(["predict", str(write_wav("x.wav", tone(1.0))), "--model", str(tmp_path / "no-model"), *args])
    except SystemExit as stop:  # argparse's own exit
        status = stop.code
    err = capsys.readouterr().err
    assert status == 2 and message in err and "Traceback" not in err and "loading model" not in err


def test_an_empty_input_path_is_refused_before_the_model_loads(write_wav, tmp_path, capsys):
    """It was analysed as a file, and failed as ": no such file or folder"."""
    assert main(["predict", str(write_wav("x.wav", tone(1.0))), "", "--model", str(tmp_path / "no-model")]) == 2
    err = capsys.readouterr().err
    assert "an input path is empty (an unset variable in a script?); name audio files or folders." in err
    assert "loading model" not in err


def test_an_output_linking_into_a_missing_folder_is_refused_before_the_model_loads(write_wav, tmp_path, capsys):
    link = tmp_path / "moods.jsonl"
    link.symlink_to(tmp_path / "gone" / "moods.jsonl")
    assert main(["predict", str(write_wav("x.wav", tone(1.0))), "--model", str(tmp_path / "no-model"),
                 "--output", str(link)]) == 2
    err = capsys.readouterr().err
    assert f"--output {link}: it links to {tmp_path / 'gone' / 'moods.jsonl'}, whose folder does not exist; create " \
           "it, or name another file." in err and "loading model" not in err


def test_without_device_a_gpu_torch_sees_is_used_unless_the_options_run_on_the_cpu_only(write_wav, monkeypatch):
    """As transformers.pipeline chooses. This machine has no GPU, so torch is told it has one or not, and the model
    load stops the command, recording the device it was asked for (benchmarks/gpu_check.sh runs it on a real GPU)."""
    import music2emo_hf.cli as cli

    asked = []

    def load(model, device, announce=True, **options):
        asked.append(device)
        raise cli.CommandError("stopped here")

    monkeypatch.setattr(cli, "_load_pipeline", load)
    song = str(write_wav("x.wav", tone(1.0)))

    def device(*argv: str) -> str:
        assert main(["predict", song, "--model", "m", *argv]) == 2
        return asked.pop()

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device() == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert device() == device("--precision", "bfloat16") == device("--runtime", "torch") == "cuda"
    assert device("--precision", "int8") == device("--runtime", "openvino") == "cpu"
    assert device("--runtime", "onnxruntime") == "cpu"
    assert device("--device", "cpu") == "cpu"


def test_an_output_that_is_a_folder_is_refused_with_a_file_name_to_use(write_wav, tmp_path, capsys):
    (tmp_path / "results.jsonl").mkdir()
    assert main(["predict", str(write_wav("x.wav", tone(1.0))), "-o", str(tmp_path / "results.jsonl")]) == 2
    assert "is a folder; name a file in it" in capsys.readouterr().err


def test_records_for_a_closed_standard_output_are_refused_before_the_model_loads(write_wav, tmp_path, capsys,
                                                                                  monkeypatch):
    monkeypatch.setattr(sys, "stdout", None)  # as Python starts with its stdout closed (`music2emo predict x >&-`)
    assert main(["predict", str(write_wav("x.wav", tone(1.0))), "--model", str(tmp_path / "no-model")]) == 2
    err = capsys.readouterr().err
    assert "the standard output is closed, so records have nowhere to go; name a file with --output FILE." in err
    assert "loading model" not in err


def test_an_output_name_too_long_for_the_files_beside_it_is_refused_before_the_model_loads(write_wav, tmp_path,
                                                                                          capsys):
    """It failed after the analysis, writing OUTPUT.errors.jsonl.tmp ("File name too long"), and left OUTPUT.parts."""
    song = write_wav("x.wav", tone(1.0))
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")  # 255 on ext4
    name = "m" * (limit - 21) + ".jsonl"  # a name the file system allows
    assert main(["predict", str(song), "--model", str(tmp_path / "no-model"), "-o", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert (f"{name}: its name is too long for the files kept beside it ({name}.errors.jsonl.tmp would be "
            f"{limit + 2} bytes, over the {limit} this file system allows); choose a name of at most {limit - 17} "
            "bytes.") in err
    assert "loading model" not in err and sorted(os.listdir(tmp_path)) == ["x.wav"]


def test_an_output_file_of_something_else_is_not_touched(tiny_model_dir, tmp_path, write_wav, capsys):
    other = tmp_path / "notes.jsonl"
    other.write_text('{"my": "own data"}\n')
    status = main(["predict", str(write_wav("x.wav", tone(1.0))), "--model", str(tiny_model_dir), "-o", str(other)])
    assert status == 2 and "other than music2emo records" in capsys.readouterr().err
    assert other.read_text() == '{"my": "own data"}\n'


@pytest.mark.slow
def test_default_model_offline_says_how_to_use_a_local_folder(tmp_path, write_wav, monkeypatch):
    """Without HF_HUB_OFFLINE and with an empty Hub cache: an unreachable Hub is detected at once (no minute of
    retries) and explained."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("MUSIC2EMO_CACHE", str(tmp_path / "converted"))
    result = run("predict", str(write_wav("x.wav", tone(1.0))), timeout=120, offline=False)
    assert result.returncode == 2
    error = result.stderr.strip().splitlines()[-1]
    assert DEFAULT_MODEL_ID in error and re.search(r"the Hub cannot be reached \(https?://\S+ does not answer\)", error)
    assert "hf download" in error and "--model" in error and "Traceback" not in result.stderr


def test_a_model_folder_that_is_not_there_is_named_as_a_folder(tmp_path, write_wav, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for missing in ("./my-model", str(tmp_path / "my-model")):
        assert main(["predict", str(write_wav("x.wav", tone(1.0))), "--model", missing, "--device", "cpu"]) == 2
        error = capsys.readouterr().err
        assert f"could not load model {missing!r}: there is no such folder. Pass --model with a model folder" in error
        assert "Repo id" not in error  # not the Hub's naming rules
    (tmp_path / "empty").mkdir()  # "it holds a None model" before
    assert main(["predict", str(tmp_path / "x.wav"), "--model", str(tmp_path / "empty"), "--device", "cpu"]) == 2
    assert (f"could not load the model in folder {str(tmp_path / 'empty')!r}: it holds no config.json: it is not a "
            "model folder") in capsys.readouterr().err
    with pytest.raises(ModelLoadError, match="x.wav: it is a file, not a model folder"):  # the Hub's rules before
        load_pipeline(str(tmp_path / "x.wav"))
    with pytest.raises(TypeError, match="model: expected a model folder, a Hub id or a released checkpoint's name, "
                                        "got NoneType"):
        load_pipeline(None)


def test_a_model_folder_without_its_weights_is_said_to_lack_them(tiny_model_dir, tmp_path, write_wav, capsys):
    """transformers' own words were "Could not load model ... with any of the following classes: (<class ...>,).
    See the original errors:" and nothing after."""
    partial = tmp_path / "half-copied"
    partial.mkdir()
    shutil.copy(tiny_model_dir / "config.json", partial)
    assert main(["predict", str(write_wav("x.wav", tone(1.0))), "--model", str(partial), "--device", "cpu"]) == 2
    assert f"could not load the model in folder {str(partial)!r}: it holds config.json but no weights " \
           "(model.safetensors): save the model there again" in capsys.readouterr().err


def test_a_model_folder_whose_weights_are_cut_short_says_so(tiny_model_dir, tmp_path, write_wav, capsys):
    """safetensors' own words were "Error while deserializing header: incomplete metadata, file not fully covered"."""
    copied = shutil.copytree(tiny_model_dir, tmp_path / "copied")
    weights = (copied / "model.safetensors").read_bytes()
    (copied / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    assert main(["predict", str(write_wav("x.wav", tone(1.0))), "--model", str(copied), "--device", "cpu"]) == 2
    assert f"could not load the model in folder {str(copied)!r}: its weights file cannot be read (model.safetensors: " \
           "Error while deserializing header: incomplete metadata, file not fully covered): it is damaged or cut " \
           "short; copy or download it again" in capsys.readouterr().err


def test_a_model_folder_of_another_kind_or_whose_weights_do_not_fit_its_config_says_so(tiny_model_dir, tmp_path,
                                                                                       write_wav, capsys, caplog):
    """A folder of another model type loaded as that type and failed on "'BertConfig' object has no attribute
    'mood_labels'"; weights of other sizes than the config makes ended on transformers' "See the original errors:";
    a missing tensor was made up at random, and tensors the config has no place for were dropped, both with exit 0."""
    from transformers import BertConfig, BertModel

    other = tmp_path / "bert"
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                         vocab_size=99)).save_pretrained(other)
    edited = shutil.copytree(tiny_model_dir, tmp_path / "edited")
    config = json.loads((edited / "config.json").read_text())
    config["backbone_config"]["hidden_size"] *= 2
    (edited / "config.json").write_text(json.dumps(config))
    song = str(write_wav("x.wav", tone(1.0)))
    assert main(["predict", song, "--model", str(other), "--device", "cpu"]) == 2
    assert (f"music2emo: error: could not load the model in folder {str(other)!r}: it holds a 'bert' model "
            "(config.json's model_type), not a Music2Emo model ('music2emo'); name one written by `music2emo init`, "
            "`convert-original` or training, or a released checkpoint") in capsys.readouterr().err
    assert main(["predict", song, "--model", str(edited), "--device", "cpu"]) == 2
    assert (f"music2emo: error: could not load the model in folder {str(edited)!r}: its weights do not fit its "
            "config.json (tensors of other sizes than that config makes: a config edited, or one of another model); "
            "save the model there again, or copy the folder whole") in capsys.readouterr().err
    lacking = shutil.copytree(tiny_model_dir, tmp_path / "lacking")  # transformers made the tensor up, and went on
    weights = safetensors.torch.load_file(lacking / "model.safetensors")
    del weights["backbone.encoder.layers.0.attention.out_proj.weight"]
    safetensors.torch.save_file(weights, lacking / "model.safetensors", metadata={"format": "pt"})
    assert main(["predict", song, "--model", str(lacking), "--device", "cpu"]) == 2
    assert (f"music2emo: error: could not load the model in folder {str(lacking)!r}: its weights file lacks tensors "
            "the model needs (backbone.encoder.layers.0.attention.out_proj.weight): it is damaged or was saved for "
            "another config.json; copy the folder whole, or save the model there again") in capsys.readouterr().err
    assert "LOAD REPORT" not in caplog.text  # transformers' table, advising to train the tensors it made up
    settings = json.loads((tiny_model_dir / "config.json").read_text())
    for name, text, said in (  # in transformers' words: AttributeError, JSONDecodeError, torch's AttributeError
            ("listed", "[]", "its config.json holds a JSON list, not a model's settings (an object): restore it, or "
                             "save the model there again"),
            ("cut", '{"model_type": "music2emo", "tasks": [{"na', "its config.json cannot be read as JSON "
                                                              "(Unterminated string starting at: line 1 column 40 "
                                                              "(char 39)): restore it, or save the model there again"),
            ("float8", json.dumps({**settings, "dtype": "float8"}),
             "its config.json names dtype 'float8', which torch does not have (float32, bfloat16, float16)"),
    ):
        damaged = shutil.copytree(tiny_model_dir, tmp_path / name)
        (damaged / "config.json").write_text(text)
        assert main(["predict", song, "--model", str(damaged), "--device", "cpu"]) == 2
        assert f"could not load the model in folder {str(damaged)!r}: {said}" in capsys.readouterr().err
    no_extractor = shutil.copytree(tiny_model_dir, tmp_path / "no-extractor")  # "Can't load feature extractor for"
    (no_extractor / "preprocessor_config.json").unlink()
    assert main(["predict", song, "--model", str(no_extractor), "--device", "cpu"]) == 2
    assert (f"could not load the model in folder {str(no_extractor)!r}: it holds no preprocessor_config.json (the "
            "feature extractor's settings): save the model there again (save_pretrained, music2emo init), or copy the "
            "folder whole.") in capsys.readouterr().err
    without_va = shutil.copytree(tiny_model_dir, tmp_path / "without-va")  # answered without valence and arousal
    config = json.loads((without_va / "config.json").read_text())
    config["tasks"] = [task for task in config["tasks"] if task["name"] != "valence_arousal"]
    (without_va / "config.json").write_text(json.dumps(config))
    assert main(["predict", song, "--model", str(without_va), "--device", "cpu"]) == 2
    assert (f"could not load the model in folder {str(without_va)!r}: its weights file holds tensors its config.json "
            "has no place for (heads.valence_arousal.0.bias, heads.valence_arousal.0.weight, "
            "heads.valence_arousal.3.bias and 1 more): config.json was edited (a task or head removed?) or belongs to "
            "another model; restore it") in capsys.readouterr().err


def test_a_model_folder_whose_weights_cannot_be_read_says_whose_permission_is_needed(tiny_model_dir, tmp_path,
                                                                                   write_wav):
    """transformers' own words were "Could not load model ... with any of the following classes", and nothing after
    "See the original errors:"; for an unreadable folder, ours were that it held a None model."""
    prefix = without_root_reading_rights()
    copied = shutil.copytree(tiny_model_dir, tmp_path / "copied")
    (copied / "model.safetensors").chmod(0)
    song = str(write_wav("x.wav", tone(1.0)))
    done = subprocess.run([*prefix, sys.executable, "-m", "music2emo_hf.cli", "predict", song, "--model", str(copied),
                           "--device", "cpu"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"{copied / 'model.safetensors'} cannot be read (permission denied); ask its owner to make it readable " \
           "(chmod a+r)." in done.stderr
    copied.chmod(0)  # the folder itself: "it holds a None model (config.json's model_type)" before
    done = subprocess.run([*prefix, sys.executable, "-m", "music2emo_hf.cli", "predict", song, "--model", str(copied),
                           "--device", "cpu"], capture_output=True, text=True, cwd=ROOT)
    copied.chmod(0o755)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"{copied} cannot be read (permission denied); ask its owner to make it readable (chmod a+rx)." \
        in done.stderr


def test_a_cache_the_export_cannot_write_is_named_in_one_line_and_the_run_goes_on(tiny_model_dir, tmp_path,
                                                                                  write_wav):
    """A library's warning on the command's stderr reads as the command's own: Python's showed the source line that
    raised it; and the export's failure named torch ("could not export this model") for a folder it could not make."""
    (tmp_path / "a-file").write_text("")
    cache = tmp_path / "a-file" / "compiled"
    song = str(write_wav("x.wav", tone(1.0)))
    done = subprocess.run([sys.executable, "-m", "music2emo_hf.cli", "predict", song, "--model", str(tiny_model_dir),
                           "--device", "cpu", "--harmony-ensemble", "1"], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "MUSIC2EMO_COMPILED_CACHE": str(cache)}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["file"] == song
    lines = done.stderr.splitlines()
    for runtime in [name for name in ("openvino", "onnxruntime") if installed(name)]:
        assert (f"warning: runtime='auto' passes over {runtime}: its cache {cache} cannot be written (Not a directory); "
                "set MUSIC2EMO_COMPILED_CACHE to a folder this user can write") in lines
    assert not any("UserWarning" in line or "_make_backbone_runtime()" in line for line in lines), lines


def test_init_writes_an_untrained_model_from_a_hub_config(tmp_path, capsys):
    assert main(["init", "--config", str(TINY_CONFIG), str(tmp_path / "m")]) == 0
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["untrained"] is True and config["model_type"] == "music2emo"
    assert (tmp_path / "m" / "model.safetensors").exists() and (tmp_path / "m" / "preprocessor_config.json").exists()
    mask = os.umask(0o022)
    os.umask(mask)
    for written in (tmp_path / "m").iterdir():  # safetensors makes its file private: a shared model must not be
        assert written.stat().st_mode & 0o777 == 0o666 & ~mask, written.name
    assert main(["init", "--config", str(ROOT / "hub_configs"), str(tmp_path / "n")]) == 2
    assert "config.json" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:  # torch's "Overflow when unpacking long long" before
        main(["init", "--config", str(TINY_CONFIG), str(tmp_path / "n"), "--seed", "99999999999999999999"])
    assert stop.value.code == 2 and "--seed: expected a whole number from 0 to 2**63 - 1, got '99999999999999999999'" \
        in capsys.readouterr().err
    other = shutil.copytree(TINY_CONFIG, tmp_path / "other-config")
    (other / "config.json").write_text(json.dumps({**json.loads((other / "config.json").read_text()),
                                                   "model_type": "bert"}))
    assert main(["init", "--config", str(other), str(tmp_path / "n")]) == 2  # it wrote a Music2Emo model
    assert f"--config {other}: it holds a 'bert' model (config.json's model_type), not a Music2Emo model" \
        in capsys.readouterr().err
    assert main(["init", "--config", str(TINY_CONFIG), str(tmp_path / "n"), "--backbone", str(tmp_path / "m")]) == 2
    assert (f"music2emo: error: --backbone {tmp_path / 'm'}: holds a 'music2emo' model (config.json's model_type), not "
            "a MERT-v1 or Hubert backbone") in capsys.readouterr().err  # it was taken, its backbone made up at random
    assert not (tmp_path / "n").exists()


def test_a_model_write_stopped_by_sigterm_leaves_nothing(tmp_path):
    """`kill` (or a scheduler's time limit) while the weights are written: the partial folder, as large as the
    model, used to stay beside --out for good."""
    stopped_in_write = (
        "import os, signal, sys\n"
        "import music2emo_hf.pipeline_music2emo as pipeline\n"
        "from music2emo_hf.cli import main\n"
        "def save_model(model, extractor, out):\n"
        "    (out / 'model.safetensors').write_bytes(b'half written')\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "pipeline.save_model = save_model\n"
        f"sys.exit(main(['init', '--config', {str(TINY_CONFIG)!r}, {str(tmp_path / 'm')!r}]))\n"
    )
    result = subprocess.run([sys.executable, "-c", stopped_in_write], capture_output=True, text=True, timeout=300)
    assert result.returncode == 143 and "music2emo: terminated; nothing was written; run it again" in result.stderr, \
        result.stderr  # not "go on where it stopped": a model write starts over
    assert list(tmp_path.iterdir()) == []


def test_init_writes_over_nothing(tmp_path, capsys, monkeypatch):
    """A file, a folder holding anything (a user's files, another model) is refused and left as it was; an empty
    folder is filled. From outside the repository, a config given as in the README is pointed at."""
    song, music, model = tmp_path / "song.wav", tmp_path / "music", tmp_path / "model"
    song.write_bytes(b"RIFF")
    music.mkdir()
    (music / "config.json").write_text("{}")
    assert main(["init", "--config", str(TINY_CONFIG), str(model)]) == 0
    weights = (model / "model.safetensors").read_bytes()
    capsys.readouterr()
    for taken, what in ((song, "is a file"), (music, "is a folder that holds files"),
                        (model, "is a folder that holds files")):
        assert main(["init", "--config", str(TINY_CONFIG), str(taken), "--seed", "1"]) == 2
        assert f"{taken}: {what}; name a new folder (nothing is written over)." in capsys.readouterr().err
    assert song.read_bytes() == b"RIFF" and [p.name for p in music.iterdir()] == ["config.json"]
    assert (model / "model.safetensors").read_bytes() == weights
    # Empty folders are filled where they are: the current one (with its own mode), and one reached by a link.
    for empty in ("here", "target"):
        (tmp_path / empty).mkdir()
    os.chmod(tmp_path / "here", 0o2770)
    (tmp_path / "link").symlink_to(tmp_path / "target")
    monkeypatch.chdir(tmp_path / "here")
    assert main(["init", "--config", str(TINY_CONFIG), "."]) == 0
    assert main(["init", "--config", str(TINY_CONFIG), str(tmp_path / "link")]) == 0
    for filled in (tmp_path / "here", tmp_path / "target"):
        assert (filled / "config.json").is_file() and (filled / "model.safetensors").is_file()
        assert not list(filled.glob(".*partial*"))
    assert stat.S_IMODE((tmp_path / "here").stat().st_mode) == 0o2770 and (tmp_path / "link").is_symlink()
    assert not list(tmp_path.glob(".*partial*"))

    monkeypatch.chdir(tmp_path)
    assert main(["init", "--config", "hub_configs/tiny-random", "elsewhere"]) == 2
    assert f"(from here it is {TINY_CONFIG}: the configs are in the repository's hub_configs/)" in \
        capsys.readouterr().err
    assert main(["init", "--config", str(TINY_CONFIG), str(song / "model")]) == 2  # under a file: nowhere to write
    assert f"{song / 'model'}: cannot write the model there ({song} is not a folder); nothing was left behind." \
        in capsys.readouterr().err  # mkdir's own words were "File exists"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here", "link", "model", "music", "song.wav", "target"]


def test_the_default_model_is_the_authors_j_all_and_ours_is_a_hub_configs_variant():
    from music2emo_hf import PUBLISHED_MODEL_ID
    from music2emo_hf.released import parse_reference

    assert parse_reference(DEFAULT_MODEL_ID).checkpoint == "J_all"
    variant = ROOT / "hub_configs" / PUBLISHED_MODEL_ID.split("/")[-1]
    assert (variant / "config.json").is_file() and (variant / "README.md").is_file()


def test_a_file_that_is_not_audio_is_named_once_in_plain_words_and_leaves_no_empty_output(tiny_model_dir, tmp_path,
                                                                                           capfd, monkeypatch):
    """capfd reads the process's file descriptor 2 itself, where the decoders write their notes from C."""
    from music2emo_hf import audio

    monkeypatch.setattr(audio, "SHOW_DECODER_NOTES", False)  # --verbose below sets it for the process
    fake = tmp_path / "song.mp3"
    fake.write_text("these are words, not sound\n" * 20)
    output = tmp_path / "moods.jsonl"
    capfd.readouterr()
    assert main(["predict", str(fake), "--model", str(tiny_model_dir), "-o", str(output)]) == 1
    stderr = capfd.readouterr().err
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {fake}: not audio: it could not be decoded as any supported format "
                      "(WAV, FLAC, Ogg Vorbis/Opus, MP3, AIFF, W64, RF64, CAF, AU)."]
    assert "Note:" not in stderr and "resync" not in stderr  # mpg123's notes stay off the terminal
    assert not output.exists() and not Path(f"{output}.parts").exists()  # nothing analysed: no file that looks like a result
    assert [entry["input"] for entry in jsonl(Path(f"{output}.errors.jsonl"))] == [str(fake)]
    assert main(["predict", str(fake), "--model", str(tiny_model_dir), "--verbose"]) == 1
    assert "resync" in capfd.readouterr().err


def test_the_decoders_notes_on_a_damaged_file_stay_off_the_terminal_while_it_decodes(tiny_model_dir, tmp_path,
                                                                                     capfd, monkeypatch):
    """mpg123 meets damage in the middle of an MP3 while decoding, long after the file opened: it writes its notes
    to descriptor 2 from C, and gives up as if the file ended there (11.2 s into these 45 s), which passed unsaid."""
    from music2emo_hf import audio

    monkeypatch.setattr(audio, "SHOW_DECODER_NOTES", False)  # --verbose below sets it for the process
    damaged = bytearray(require_fixtures("emomusic", "audio", "4.mp3").read_bytes())
    damaged[200_000:250_000] = np.random.default_rng(3).integers(0, 256, 50_000, dtype=np.uint8).tobytes()
    (tmp_path / "damaged.mp3").write_bytes(damaged)
    args = ["predict", str(tmp_path / "damaged.mp3"), "--model", str(tiny_model_dir), "--harmony-ensemble", "1"]
    capfd.readouterr()
    assert main([*args, "-o", str(tmp_path / "moods.jsonl")]) == 0
    stderr = capfd.readouterr().err
    assert "Note:" not in stderr and "resync" not in stderr, stderr
    assert stderr.count(f"warning: {tmp_path / 'damaged.mp3'}: decoding stopped at 11.2 s of the 45.0 s its header "
                        "announces (the file is damaged or cut short there); what precedes is analysed.") == 1, stderr
    assert jsonl(tmp_path / "moods.jsonl")[0]["audio_warning"].startswith("decoding stopped at 11.2 s of the 45.0 s")
    assert main([*args, "--verbose"]) == 0
    assert "Trying to resync" in capfd.readouterr().err


def test_an_unexpected_error_is_one_line_and_verbose_shows_where_it_arose(monkeypatch, capsys):
    from music2emo_hf import cli

    def broken(args):
        raise RuntimeError("something this package did not foresee")

    monkeypatch.setattr(cli, "_check_inputs", broken)
    assert main(["predict", "song.mp3"]) == 2
    err = capsys.readouterr().err
    assert err == "music2emo: error: RuntimeError: something this package did not foresee\n"
    assert main(["predict", "song.mp3", "--verbose"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "in broken" in err
    assert err.endswith("music2emo: error: RuntimeError: something this package did not foresee\n")
