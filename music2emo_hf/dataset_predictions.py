"""The `datasets` door: audio read from a Hugging Face dataset, predictions written as one.

`predict_dataset(dataset, pipe)` returns the predictions as a `Dataset` (several processes under `accelerate launch`
share the rows and every process gets them all). `music2emo predict --dataset ... --output-dataset DIR` does the same
as a resumable job (`jobs`) and writes DIR as Parquet + a dataset card that `datasets.load_dataset(DIR)` reads.

Audio is read from what the dataset holds (the bytes or path of an `Audio` column, a path column, or an
{"array", "sampling_rate"} dict) by this package's own decoder, as files are: `datasets`' decoding is switched off.
Each output row holds `row` (the input's row index), the input's scalar columns (`id_columns`), the model's outputs
(moods as [{label, score}], one `mood:<label>` column per mood, valence, arousal, and key, chords, segments, embedding
or zero_shot when asked for), in input order. An input column named as an output one (a corpus's own `valence`) is kept
as `input:<name>`, with its own type. The scale, the model and a note on untrained weights go into the card.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .jobs import MOOD_PREFIX, mood_columns

RECORDS = ".records.jsonl"  # the job's records in the output folder (hidden: load_dataset ignores it)
_PER_DATASET = ("scale", "model", "warning", "options")  # the same in every record: said once, in the card


INPUT_PREFIX = "input:"  # before an input column's name where an output column has that name


def undecoded(dataset, audio_column: str):
    """The dataset with its audio column left as `datasets` stores it ({"bytes", "path"}), for our own decoder; a
    stream of audio files (`audiofolder`: a folder or Hub repo of audio files) with each file's path or URL, which
    `datasets` would otherwise encode with torchcodec first (an ImportError without it)."""
    from datasets import Audio, ClassLabel, IterableDataset, Value

    if dataset.features is None:  # a stream made from a generator: its columns are those of its first row
        dataset = dataset._resolve_features()
    if audio_column not in dataset.features:
        columns = ", ".join(dataset.features) or "none"
        raise ValueError(f"the dataset has no column {audio_column!r} (its columns: {columns}); name the audio "
                         "column (audio_column= in Python, --audio-column on the command line).")
    feature = dataset.features[audio_column]
    if isinstance(feature, Value | ClassLabel) and feature.dtype not in ("string", "large_string", "binary",
                                                                          "large_binary"):
        raise ValueError(f"the dataset's column {audio_column!r} holds {feature.dtype} values, not audio (an Audio "
                         "column, file paths or bytes, or {'array', 'sampling_rate'} dicts); name the audio column "
                         "(audio_column= in Python, --audio-column on the command line).")
    if isinstance(feature, Audio):
        if isinstance(dataset, IterableDataset) and dataset.info.builder_name == "audiofolder":
            return dataset.cast_column(audio_column, Value("string"))
        return dataset.cast_column(audio_column, Audio(decode=False))
    return dataset


def id_columns(features: Mapping[str, Any], audio_column: str) -> list[str]:
    """The input's columns copied into every output row: its scalar ones (ids, titles, class labels), not the
    audio."""
    from datasets import ClassLabel, Value

    return [name for name, feature in features.items()
            if name != audio_column and isinstance(feature, Value | ClassLabel)]


def in_json(feature) -> bool:
    """Whether a scalar column's values are JSON values as they are (a job's records are JSON lines): numbers,
    strings, booleans and class labels are; bytes, dates and times are not."""
    import pyarrow as pa

    kind = feature.pa_type if hasattr(feature, "pa_type") else pa.int64()  # a ClassLabel is its index
    return any(test(kind) for test in (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean,
                                       pa.types.is_string, pa.types.is_large_string))


def row_record(index: int, example: Mapping[str, Any], ids: Sequence[str], answer: Mapping[str, Any]) -> dict:
    """A row's record: its index in the input (`row`), the input's id columns, then the pipeline's answer. An id
    column named as a field of the answer, as `row`, as a field said once in the card or a `mood:` column (see
    `output_row`), or with the prefix itself, is kept as `input:<name>`: a corpus's own `valence` neither overwrites
    nor retypes the predicted one."""
    def kept_as(name: str) -> str:
        taken = name in ("row", "audio_warning", *_PER_DATASET) or name in answer or name.startswith(
            (MOOD_PREFIX, INPUT_PREFIX))
        return INPUT_PREFIX + name if taken else name

    return {"row": index, **{kept_as(name): example[name] for name in ids}, **answer}


def audio_input(value: Any) -> Any:
    """What the pipeline reads for one row's audio value (its caller names the row in the error)."""
    from .audio import undecoded_audio

    if isinstance(value, Mapping):
        if source := undecoded_audio(value):
            return _fetched(source)
        if "array" in value:
            return value
    if isinstance(value, (str, os.PathLike, bytes)):
        return _fetched(value)
    raise ValueError(f"no audio in it (expected the bytes or path of an Audio column, a path, or "
                     f"{{'array', 'sampling_rate'}}; got {type(value).__name__}).")


def _fetched(source: Any) -> Any:
    """A streamed dataset's file named by URL (a Hub file, an archive's member: `zip://NAME::ARCHIVE`) as its bytes,
    read as `datasets` reads it; anything else as it is."""
    if isinstance(source, str) and "://" in source:
        from datasets.utils.file_utils import xopen

        with xopen(source, "rb") as file:
            return file.read()
    return source


def output_row(record: Mapping[str, Any], mood_labels: Sequence[str]) -> dict[str, Any]:
    """A predictions record as an output row: the moods also one float column each (None when left out by top_k or
    threshold); what every row shares is left for the card. `audio_warning` is in every row: null for a whole file,
    else how it was cut short or damaged (the pipeline's answer has it for such a file alone)."""
    row = {key: value for key, value in record.items() if key not in (*_PER_DATASET, "audio_warning")}
    row["audio_warning"] = record.get("audio_warning")
    row.update(mood_columns(record.get("moods", ()), mood_labels, None))
    return row


def output_features(first_row: Mapping[str, Any], input_features: Mapping[str, Any], mood_labels: Sequence[str]):
    """The output's `Features`: the id columns typed as in the input, the rest from the first row's values. An empty
    list there is ranked labels (`moods`, another head's tags) that `top_k` or `threshold` left empty: the only list
    an answer can hold empty."""
    from datasets import Features, List, Value

    ranked_labels = {"label": Value("string"), "score": Value("float64")}

    def feature_of(value):
        if isinstance(value, bool):
            return Value("bool")
        if isinstance(value, int):
            return Value("int64")
        if isinstance(value, float):
            return Value("float64")  # the pipeline's values, exactly as in its JSON records
        if isinstance(value, str):
            return Value("string")
        if isinstance(value, Mapping):
            return {key: feature_of(item) for key, item in value.items()}
        if isinstance(value, list):
            return List(feature_of(value[0]) if value else ranked_labels)
        raise TypeError(f"cannot store a {type(value).__name__} in a dataset column")

    features = {}
    for name, value in first_row.items():
        if name.startswith(INPUT_PREFIX) and name[len(INPUT_PREFIX):] in input_features:  # see `row_record`
            features[name] = input_features[name[len(INPUT_PREFIX):]]
        elif name in input_features and name != "row" and INPUT_PREFIX + name not in first_row:
            features[name] = input_features[name]
        elif name == "audio_warning":
            features[name] = Value("string")  # null in a first row from a whole file
        elif name.startswith(MOOD_PREFIX) and name.removeprefix(MOOD_PREFIX) in mood_labels:
            features[name] = Value("float32")  # one column per label of the model: half the size, 7 digits
        else:
            features[name] = feature_of(value)
    return Features(features)


def write_predictions(rows: Iterator[dict], out: str | os.PathLike, split: str, input_features, mood_labels,
                      about: Mapping[str, Any], batch_rows: int = 10_000) -> int:
    """`out/data/<split>-<fingerprint>.parquet` (written in row groups, so memory stays bounded) and the card
    `out/README.md` naming that file; returns the number of rows.

    The card names the exact file, not a pattern: `datasets` caches a folder whose card gives a pattern under the
    pattern alone, so a rewritten folder would load as its first version."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .atomic import file_sha256

    out = Path(out)
    partial = out / "data" / f"{split}.parquet.partial"
    writer, batch, count, features = None, [], 0, None

    def flush():
        nonlocal writer
        table = pa.Table.from_pylist([features.encode_example(row) for row in batch], schema=features.arrow_schema)
        if writer is None:  # no rows, no folder: nothing there for load_dataset to fail on
            partial.parent.mkdir(parents=True, exist_ok=True)
            writer = pq.ParquetWriter(partial, features.arrow_schema)
        writer.write_table(table)
        batch.clear()

    for row in rows:
        features = features or output_features(row, input_features, mood_labels)
        batch.append(row)
        count += 1
        if len(batch) == batch_rows:
            flush()
    if batch:
        flush()
    if writer is None:
        return 0
    writer.close()
    target = out / "data" / f"{split}-{file_sha256(partial)[:16]}.parquet"
    os.replace(partial, target)
    _write_card(out, split, count, features, about, target.relative_to(out).as_posix())
    for stale in (out / "data").glob(f"{split}-*.parquet"):
        if stale != target:
            stale.unlink()
    return count


MADE_BY = "made with `music2emo predict` (music2emo-hf)."  # in every card written here


def written_here(folder: str | os.PathLike) -> bool:
    """Whether `folder` is empty or holds predictions this command wrote (its records, or its card): anything else
    would be written over."""
    folder = Path(folder)
    job_files = [folder / (RECORDS + suffix) for suffix in ("", ".lock", ".parts", ".errors.jsonl")]
    if not folder.is_dir() or not any(folder.iterdir()) or any(path.exists() for path in job_files):
        return True  # a run killed, or whose every row failed, left only these
    try:
        return MADE_BY in (folder / "README.md").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def _write_card(out: Path, split: str, count: int, features, about: Mapping[str, Any], data_file: str) -> None:
    from .atomic import write_atomic

    moods = sum(name.startswith(MOOD_PREFIX) for name in features)
    columns = "\n".join(f"- `{name}`" for name in features
                         if not name.startswith(MOOD_PREFIX) and name != "audio_warning")
    notes = f"\n**{about['warning']}**\n" if about.get("warning") else ""
    body = f"""---
configs:
- config_name: default
  data_files:
  - split: {split}
    path: {data_file}
tags:
- music
- emotion-recognition
- music2emo
---
# Music emotion predictions

{count} rows: the predictions of the model `{about['model']}` for the dataset `{about['source']}` (split `{split}`),
{MADE_BY}
{notes}
Each row is one input row; `row` is its index there. Columns:

{columns}
- `mood:<label>`: the probability of each of the model's {moods} mood labels
  (empty where `top_k` or `threshold` left it out of `moods`)
- `audio_warning`: empty for a whole file, else how it was cut short or damaged (what it held was analysed)

Pipeline options: `{json.dumps(about.get('options', {}), sort_keys=True)}`. The model's provenance:
`{json.dumps(about.get('provenance', {}), sort_keys=True)}`. The scale of valence and arousal:
`{json.dumps(about.get('scale', {}), sort_keys=True)}`.
{about.get('failed_note', '')}"""
    write_atomic(out / "README.md", body)


def predict_dataset(dataset, pipe, audio_column: str = "audio", **options):
    """Predictions for every row of `dataset` (a `Dataset` or an `IterableDataset`) as a `Dataset` in input order,
    one row per input row that could be analysed (`row` is its index; a row that could not be is named in a warning,
    and none at all is an error). `options` go to the pipeline (top_k, return_harmony, ...). Under `accelerate
    launch` the processes share the rows (row i to process i mod N), each on its own device, and every process
    returns the whole result."""
    from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict

    from .jobs import launched_processes, process_state

    if isinstance(dataset, DatasetDict | IterableDatasetDict):
        raise TypeError(f"predict_dataset takes one split, e.g. dataset[{next(iter(dataset), 'train')!r}]; got a "
                        f"{type(dataset).__name__} of the splits {', '.join(dataset)}.")
    if not isinstance(dataset, Dataset | IterableDataset):
        raise TypeError(f"predict_dataset takes a datasets.Dataset or IterableDataset, got {type(dataset).__name__}; "
                        "for a list of files or arrays, call the pipeline on it.")
    if not hasattr(pipe, "_sanitize_parameters"):
        raise TypeError(f"predict_dataset takes a music-emotion pipeline, got {type(pipe).__name__}; make one with "
                        "music2emo_hf.hub.load_pipeline(MODEL).")
    if batched := sorted({"batch_size", "num_workers"} & set(options)):
        raise TypeError(f"{', '.join(batched)}: predict_dataset analyses one row at a time; for rows analysed "
                        "together use `music2emo predict --dataset ... --batch-size N`, or pipe.stream on the column.")
    processes, rank, state = launched_processes(), 0, None
    if processes > 1:
        state = process_state()
        rank = state.process_index
    pipe._sanitize_parameters(**options)  # wrong options are refused once, not once per row
    dataset = undecoded(dataset, audio_column)
    ids = id_columns(dataset.features, audio_column)
    mood_labels = pipe.model.config.mood_labels
    records, failures, about = [], [], {}
    for index, example in enumerate(dataset):
        if index % processes != rank:
            continue
        try:
            result = pipe(audio_input(example[audio_column]), **options)
        except Exception as error:  # one bad row must not stop the others; they are named below
            failures.append(f"row {index}: {str(error).rstrip('.')}")
            continue
        about = {key: result[key] for key in _PER_DATASET if key in result}
        records.append(row_record(index, example, ids, result))
    if state:
        from accelerate.utils import gather_object

        records = sorted(gather_object(records), key=lambda record: record["row"])
        failures = gather_object(failures)
    if failures and not records:  # an empty result, with only a warning to say why, passes for an answer
        raise ValueError(f"no row could be analysed ({len(failures)} tried): " + "; ".join(failures[:3])
                         + _relative_paths_note(dataset, audio_column))
    if failures:
        warnings.warn(f"{len(failures)} row(s) could not be analysed: " + "; ".join(failures[:10]), stacklevel=2)
    rows = [output_row(record, mood_labels) for record in records]
    if not rows:
        return Dataset.from_list([])
    result = Dataset.from_list(rows, features=output_features(rows[0], dataset.features, mood_labels))
    result.info.description = json.dumps(about, sort_keys=True)
    return result


class DatasetSource:
    """The rows of a dataset folder or Hub dataset for one process of a job, read in order (streamed where the
    dataset allows, so one larger than memory is fine)."""

    def __init__(self, source: str, config: str | None, split: str | None, audio_column: str):
        from datasets import load_dataset, load_from_disk

        from .data.layout import AudioSources

        self.source, self.config, self.audio_column = source, config, audio_column
        self.downloads = AudioSources(source)  # a prepare-data folder's, by corpus (none for a Hub dataset)
        saved = os.path.isdir(source) and (Path(source, "dataset_info.json").is_file()
                                           or Path(source, "dataset_dict.json").is_file())
        try:
            if saved:  # a folder written by save_to_disk: memory-mapped, not streamed
                dataset = load_from_disk(source)
                if hasattr(dataset, "keys"):
                    split = _one_split(split, list(dataset.keys()))
                    dataset = dataset[split]
            else:
                dataset = load_dataset(source, config, streaming=True)
                split = _one_split(split, list(dataset.keys()))
                dataset = dataset[split]
        except (FileNotFoundError, ValueError) as error:
            raise ValueError(f"--dataset {source}: {error}") from error
        self.split = split or "train"
        self.dataset = undecoded(dataset, audio_column)
        self.features = self.dataset.features
        scalar = id_columns(self.features, audio_column)
        self.ids = [name for name in scalar if in_json(self.features[name])]
        self.left_out = [name for name in scalar if name not in self.ids]  # see `in_json`
        self._cursor: Iterator[tuple[int, dict]] | None = None
        self._at, self._example = -1, None
        self._ids_read: dict[str, dict[str, Any]] = {}  # a row's ids, kept from its audio's reading until its record

    def identity(self) -> dict[str, str]:
        """Which rows these are, as the options of the records name them: row indices mean nothing without it (the
        rows of another split or dataset must not pass for these on a rerun)."""
        named = {"--dataset": os.path.realpath(self.source) if os.path.isdir(self.source) else self.source,
                 "--split": self.split}
        if self.config:
            named["--config"] = self.config
        if self.audio_column != "audio":
            named["--audio-column"] = self.audio_column
        return named

    def __len__(self) -> int:
        from datasets import Dataset

        if isinstance(self.dataset, Dataset):
            return len(self.dataset)
        info = self.dataset.info.splits.get(self.split) if self.dataset.info.splits else None
        if info and info.num_examples:
            return info.num_examples
        return sum(1 for _ in self.dataset.select_columns(self.ids[:1] or [self.audio_column]))

    def row(self, index: int) -> dict:
        """Row `index`; rows are asked for in increasing order (a stream is read once), each row more than once (its
        ids, then its audio): the last one is kept."""
        from datasets import Dataset

        if index == self._at:
            return self._example
        if isinstance(self.dataset, Dataset):
            self._at, self._example = index, self.dataset[index]
            return self._example
        if self._cursor is None or index < self._at:
            self._cursor, self._at = enumerate(iter(self.dataset)), -1
        for self._at, self._example in self._cursor:
            if self._at == index:
                return self._example
        raise IndexError(f"row {index} is past the end of the dataset")

    @property
    def keys(self) -> list[str]:
        return [str(index) for index in range(len(self))]

    def label(self, key: str) -> str:
        return f"{self.source} [{self.split}] row {key}"

    def weight(self, key: str) -> float:
        return 1.0  # lengths would need the audio: rows are shared out evenly

    def record(self, key: str, answer: Mapping[str, Any]) -> dict[str, Any]:
        """A row's record, with the ids kept when its audio was read: the pipeline reads rows ahead of the records,
        and a stream asked for a row behind it would be read again from its start."""
        ids = self._ids_read.pop(key, None)
        return row_record(int(key), self.row(int(key)) if ids is None else ids, self.ids, answer)

    def audio(self, key: str) -> Any:
        """Row `key`'s audio as the pipeline reads it. A folder made by `music2emo prepare-data` names each row's
        file relative to its corpus's download folder, which the folder's sources.json records."""
        example = self.row(int(key))
        self._ids_read[key] = {name: example[name] for name in self.ids}
        value, corpus = example[self.audio_column], example.get("corpus") or self.config
        if isinstance(value, str) and corpus in self.downloads and not os.path.isabs(value):
            value = self.downloads.resolve(corpus, value)
        return audio_input(value)

    def as_file(self, key: str, folder: str) -> str:
        """A row's audio as a file in `folder` (to analyse it alone in a child process)."""
        index = int(key)
        value = self.audio(key)
        if isinstance(value, (str, os.PathLike)):
            return os.fspath(value)
        path = os.path.join(folder, f"row-{index}")
        if isinstance(value, bytes):
            Path(path).write_bytes(value)
            return path
        import numpy as np
        import soundfile as sf

        sf.write(path + ".wav", np.asarray(value["array"], dtype=np.float32), int(value["sampling_rate"]))
        return path + ".wav"


def _relative_paths_note(dataset, audio_column: str) -> str:
    """Why a dataset made by `music2emo prepare-data` fails here: its rows name their files relative to each corpus's
    download, which only its folder's sources.json locates."""
    first = next(iter(dataset), {}).get(audio_column)
    if isinstance(first, str) and not os.path.isabs(first) and "://" not in first:
        return (f". Its audio paths are relative ({first!r}): a folder made by `music2emo prepare-data` names them "
                "inside each corpus's download; run `music2emo predict --dataset FOLDER`, which finds them, or join "
                "them with music2emo_hf.data.layout.AudioSources(FOLDER).resolve(corpus, path).")
    return "."


def _one_split(split: str | None, splits: list[str]) -> str:
    if split is None:
        if len(splits) == 1:
            return splits[0]
        raise ValueError(f"it has the splits {', '.join(splits)}; choose one with --split.")
    if split not in splits:
        raise ValueError(f"it has no split {split!r} (its splits: {', '.join(splits)}).")
    return split


def records_in_row_order(path: str | os.PathLike) -> Iterator[dict]:
    """The job's records sorted by input row, read one at a time: a first pass notes where each record starts, so
    memory holds two numbers per row, not the records (a rerun appends retried rows after the others)."""
    starts = []
    with open(path, "rb") as handle:
        position = 0
        for line in handle:
            if line.endswith(b"\n") and line.strip():
                starts.append((json.loads(line)["row"], position))
            position += len(line)
        for _, position in sorted(starts):
            handle.seek(position)
            yield json.loads(handle.readline())


__all__ = ["DatasetSource", "predict_dataset", "records_in_row_order", "write_predictions"]
