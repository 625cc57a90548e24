"""The key of BTC's chord path: `btc.music21_key` (the notes music21's MIDI reader makes of the chord tones' MIDI,
made without music21, ranked as its key analyser ranks them) against the authors' whole reading
(`btc.whole_reading_key`), in speed and in answers.

    python benchmarks/music21_key.py                         # timing, and the same key on 1,000 + 100 timelines
    python benchmarks/music21_key.py --minutes 0.75 30 --short 0 --long 0

Timelines are BTC frames (10.8 per second) of random chords held for about 1.9 s (20 frames), as music changes
chords; the check draws random timelines (up to 37 s, or up to 6 min for the long ones) of 1 to 7 chord classes
held 1 to 29 frames, with N and X mixed into some.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from music2emo_hf.btc import FRAME_SECONDS, merge_frames, music21_key, whole_reading_key  # noqa: E402


def random_timeline(seed: int, max_frames: int) -> list[tuple[float, float, str]]:
    rng = np.random.default_rng(seed)
    frames = int(rng.integers(2, max_frames))
    hold = int(rng.integers(1, 30))
    classes = rng.integers(0, 170, size=int(rng.integers(1, 8)))
    top = np.repeat(rng.choice(classes, size=frames // hold + 1), hold)[:frames]
    if seed % 7 == 0:
        top[rng.random(frames) < 0.3] = 168  # X
    return merge_frames(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="*", default=[0.75, 3.0, 30.0])
    parser.add_argument("--short", type=int, default=1000, help="random timelines of up to 400 frames checked")
    parser.add_argument("--long", type=int, default=100, help="random timelines of up to 4,000 frames checked")
    args = parser.parse_args()

    music21_key([(0.0, 1.0, "C"), (1.0, 2.0, "G")])  # music21 loaded before any timing
    rng = np.random.default_rng(0)
    for minutes in args.minutes:
        frames = int(minutes * 60 / FRAME_SECONDS)
        segments = merge_frames(np.repeat(rng.integers(0, 170, size=frames // 20 + 1), 20)[:frames])
        seconds = []
        for key in (whole_reading_key, music21_key):
            start = time.perf_counter()
            found = key(segments)
            seconds.append(time.perf_counter() - start)
        print(f"{minutes:g} min, {len(segments)} chords: whole reading {seconds[0]:.3f} s, music21_key "
              f"{seconds[1]:.3f} s ({seconds[0] / seconds[1]:.1f}x), key {found}")
    for count, max_frames, first in ((args.short, 400, 1000), (args.long, 4000, 5000)):
        if count:
            differing = [seed for seed in range(first, first + count)
                         if music21_key(random_timeline(seed, max_frames)) != whole_reading_key(
                             random_timeline(seed, max_frames))]
            print(f"timelines of up to {max_frames} frames: the same key on {count - len(differing)} of {count}"
                  + (f"; differing seeds {differing}" if differing else ""))


if __name__ == "__main__":
    main()
