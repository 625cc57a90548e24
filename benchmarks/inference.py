"""Inference speed and memory of the `music-emotion` pipeline, per stage, on synthesized tracks.

    python benchmarks/inference.py                      # 3-min and 30-min tracks, real MERT-v1-95M architecture
    python benchmarks/inference.py --minutes 3 --threads 2

Random weights at the real architecture cost what real weights cost. Each track runs in a fresh process so its peak
resident memory is its own; the harmony networks are loaded and warmed up before timing.
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
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]


def synthesize_track(path: Path, minutes: float, rate: int = 44100) -> None:
    """A stereo 16-bit WAV of a I-V-vi-IV progression with bass and noise hits, written block by block."""
    progression = [(60, 64, 67), (55, 59, 62), (57, 60, 64), (53, 57, 60)]
    seconds_per_chord = 2.0
    block = int(seconds_per_chord * rate)
    t = np.arange(block) / rate
    envelope = np.minimum(1.0, t / 0.02) * np.exp(-t / 3.0)
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", rate, channels=2, subtype="PCM_16") as out:
        for i in range(int(minutes * 60 / seconds_per_chord)):
            notes = progression[i % len(progression)]
            wave = sum(np.sin(2 * np.pi * 440 * 2 ** ((n - 69) / 12) * k * t) / k for n in notes for k in (1, 2, 3))
            wave += 0.8 * np.sin(2 * np.pi * 440 * 2 ** ((notes[0] - 81) / 12) * t)
            hits = np.zeros(block)
            for beat in range(4):
                start = beat * block // 4
                hits[start : start + 2000] += rng.standard_normal(2000) * np.exp(-np.arange(2000) / 300)
            mono = 0.08 * wave * envelope + 0.1 * hits
            out.write(np.stack([mono, 0.9 * mono], axis=1).astype(np.float32))


def child(model_dir: str, track: str, threads: int | None) -> None:
    """Run one track through the pipeline and print its figures as JSON (runs in its own process)."""
    import warnings

    import torch
    import transformers

    import music2emo_hf  # noqa: F401

    if threads:
        torch.set_num_threads(threads)
    warnings.simplefilter("ignore")
    pipe = transformers.pipeline("music-emotion", model=model_dir, device="cpu")
    pipe(np.zeros(24000, dtype=np.float32) + 0.01 * np.sin(np.arange(24000)))  # load and warm up every stage
    duration = sf.info(track).duration
    start = time.perf_counter()
    result = pipe(track, return_timings=True)
    wall = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"duration": duration, "wall": wall, "peak_mib": peak_mib, "timings": result["timings"],
                      "threads": torch.get_num_threads()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "hub_configs" / "music2emo-mert95m"))
    parser.add_argument("--minutes", type=float, nargs="+", default=[3.0, 30.0])
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--child", nargs=2, metavar=("MODEL_DIR", "TRACK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.threads)
        return

    with tempfile.TemporaryDirectory() as scratch:
        model_dir = Path(scratch) / "model"
        subprocess.run([sys.executable, "-m", "music2emo_hf.cli", "init", "--config", args.config, str(model_dir)],
                       check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        rows = []
        for minutes in args.minutes:
            track = Path(scratch) / f"track_{minutes:g}min.wav"
            synthesize_track(track, minutes)
            command = [sys.executable, __file__, "--child", str(model_dir), str(track)]
            if args.threads:
                command += ["--threads", str(args.threads)]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(output.strip().splitlines()[-1]))
            track.unlink()

    print(f"config: {args.config}   cpu cores: {os.cpu_count()}   torch threads: {rows[0]['threads']}")
    print(f"{'track':>8} {'decode':>8} {'harmony':>8} {'backbone':>9} {'heads':>7} {'total':>8} {'x realtime':>11} {'peak MiB':>9}")
    for row in rows:
        t = row["timings"]
        print(
            f"{row['duration'] / 60:>6.1f} m {t['decode']:>7.2f}s {t['harmony']:>7.2f}s {t['backbone']:>8.2f}s "
            f"{t['heads']:>6.2f}s {row['wall']:>7.2f}s {row['duration'] / row['wall']:>10.2f}x {row['peak_mib']:>9.0f}"
        )


if __name__ == "__main__":
    main()
