"""A folder through `music2emo predict` in one process and in several (torchrun, as `accelerate launch` starts
them): records per second, real-time factor, the peak memory of each process, and whether the answers agree.

    python benchmarks/catalog.py                      # 8 tracks of 45 s, 1 and 2 processes on the CPU
    python benchmarks/catalog.py --tracks 20 --processes 1 2 4 --cuda   # on a machine with 4 GPUs: one per process

The model is the default model's architecture and chord path (MERT-v1-95M + BTC) with random weights, made as
benchmarks/inference.py makes it. The ratio of records per second (N processes / 1) is the figure to read: on a
2-core CPU it shows the cost of splitting the job (each process loads the model and gets half the cores); with one
GPU per process it is the speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference import ROOT, make_model, synthesize_track  # noqa: E402

CLIP_MINUTES = 0.75


def _children(pid: int) -> list[int]:
    """The processes `pid` started: torchrun's workers. Not the processes they start, which a fork shows under the
    same command line until it runs its program (so neither are a single process's)."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parent = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if parent == pid:
                children.append(int(entry))
    return children


def _peak_mib(pid: int) -> tuple[float, str] | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    kib = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)
    return kib / 1024, command


def run(processes: int, folder: Path, model: Path, output: Path, cuda: bool) -> dict:
    """One run; the peak resident memory of every analysing process, read from /proc while it runs."""
    launch = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes)] if processes > 1
              else [sys.executable])
    command = [*launch, "-m", "music2emo_hf.cli", "predict", str(folder), "--model", str(model), "-o", str(output)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TRANSFORMERS_VERBOSITY": "error"}
    if not cuda:
        env["ACCELERATE_USE_CPU"] = "1"
        if processes == 1:
            command += ["--device", "cpu"]
    elif processes == 1:
        command += ["--device", "cuda"]
    peaks: dict[int, float] = {}
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.extend(process.stderr), daemon=True)
    reader.start()
    while process.poll() is None:
        for pid in [process.pid] if processes == 1 else _children(process.pid):
            figures = _peak_mib(pid)
            if figures and "music2emo_hf.cli" in figures[1] and "torch.distributed.run" not in figures[1]:
                peaks[pid] = max(peaks.get(pid, 0.0), figures[0])
        time.sleep(0.2)
    seconds = time.perf_counter() - started
    reader.join()
    if process.returncode != 0:
        raise SystemExit(f"{processes} process(es) failed:\n{''.join(stderr)[-3000:]}")
    records = [json.loads(line) for line in output.read_text().splitlines()]
    return {"seconds": seconds, "records": records, "peaks": sorted(peaks.values(), reverse=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, default=8)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cuda", action="store_true", help="one GPU per process (torchrun gives each its own)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="music2emo-catalog-") as scratch:
        scratch = Path(scratch)
        model = make_model(scratch, str(ROOT / "hub_configs" / "music2emo-mert95m"), "btc")
        folder = scratch / "folder"
        folder.mkdir()
        for i in range(args.tracks):
            synthesize_track(folder / f"track{i:03d}.wav", CLIP_MINUTES, seed=i)
        audio_seconds = args.tracks * CLIP_MINUTES * 60
        # The model's backbone exported (OpenVINO on x86-64) into a cache of this run's before anything is timed:
        # else the first run alone paid the export and its compilation (5-10 s), and every later one read them.
        os.environ["MUSIC2EMO_COMPILED_CACHE"] = str(scratch / "compiled")
        warm = scratch / "warm"
        warm.mkdir()
        synthesize_track(warm / "clip.wav", 2 / 60)
        run(1, warm, model, scratch / "warm.jsonl", args.cuda)
        print(f"{args.tracks} tracks of {CLIP_MINUTES * 60:.0f} s; {os.cpu_count()} CPU cores; "
              f"{'one GPU per process' if args.cuda else 'CPU only'}")
        print("| processes | wall s | records/s | x real time | vs 1 process | peak MiB per process | answers vs 1 |")
        print("|---|---|---|---|---|---|---|")
        baseline = None
        for processes in args.processes:
            figures = run(processes, folder, model, scratch / f"out-{processes}.jsonl", args.cuda)
            rate = len(figures["records"]) / figures["seconds"]
            baseline = baseline or figures
            base_rate = len(baseline["records"]) / baseline["seconds"]
            drift = max(abs(a["valence"] - b["valence"]) for a, b in zip(figures["records"], baseline["records"]))
            same_files = [r["file"] for r in figures["records"]] == [r["file"] for r in baseline["records"]]
            answers = f"same order, max valence diff {drift:.1e}" if same_files else "DIFFERENT FILES OR ORDER"
            print(f"| {processes} | {figures['seconds']:.1f} | {rate:.3f} | {audio_seconds / figures['seconds']:.2f} | "
                  f"{rate / base_rate:.2f}x | {', '.join(f'{peak:.0f}' for peak in figures['peaks'])} | {answers} |")


if __name__ == "__main__":
    main()
