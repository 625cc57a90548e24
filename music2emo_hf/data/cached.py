"""Tracks as training examples: one split of one prepared corpus, its cached features (or its audio) as
`Music2EmoModel` inputs, and targets for the head the corpus trains (`configuration_music2emo.CORPUS_TASKS`).

Targets are on the model's scale: multi-hot over the task's labels from a row's `moods`, or valence/arousal mapped
from the row's [-1, 1] normalisation onto the task's scale (DEAM and EmoMusic stay on 1-9; PMEmo's 0-1 becomes
1 + 8x, as in Music2Emo). A value the corpus lacks is NaN, which every loss and metric leaves out.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..configuration_music2emo import Music2EmoConfig
from .features import audio_changed_size, feature_path, load_track_features, trainable_metadata
from .layout import AudioSources, split_rows

# What a collated batch holds besides the chunk axis: model inputs, plus `labels` and `index` (row numbers).
_STACKED = ("chord_root_ids", "chord_quality_ids", "chord_mask", "mode_ids", "labels", "index")


def task_targets(row: Mapping[str, Any], task: Mapping[str, Any]) -> np.ndarray:
    """One row's targets for `task`, NaN where the row has no value."""
    labels = task["labels"]
    if task["type"] == "multilabel":
        if row.get("mood_targets") is None:  # a track the corpus lists but nobody rated (CAL500)
            return np.full(len(labels), np.nan, dtype=np.float32)
        return np.isin(labels, row["moods"]).astype(np.float32)
    scale = Music2EmoConfig.scale_of(task)
    values = [row.get(f"{label}_normalized") for label in labels]
    return np.array([np.nan if v is None else scale.from_unit(v) for v in values], dtype=np.float32)


class CachedCorpus(torch.utils.data.Dataset):
    """The rows of `split` of `corpus` in a prepared folder that have audio, each with its cached features.

    Items are dicts of model inputs for one track (`chunk_embeddings` or, with `feature_extractor`, the audio's
    `input_values` for end-to-end training; `chunk_durations`, chord tokens, `mode_ids`) plus `labels` (targets) and
    `index`. Rows without audio (the corpus's download lacks the file, or it could not be decoded) and rows whose
    features are missing are left out and named in `without_audio` and `without_features`, so a caller can report
    them.
    """

    def __init__(
        self,
        dataset_dir: str | os.PathLike,
        corpus: str,
        split: str,
        cache_dir: str | os.PathLike,
        task: Mapping[str, Any],
        layers: Sequence[int],
        feature_extractor=None,
    ):
        self.corpus, self.split, self.task = corpus, split, dict(task)
        self.cache_dir, self.layers = Path(cache_dir), list(layers)
        self.feature_extractor = feature_extractor
        rows = split_rows(dataset_dir, corpus, split)
        self.without_audio = [row["track_id"] for row in rows if row["audio"] is None]
        rows = [row for row in rows if row["audio"] is not None]
        self.without_features = [
            row["track_id"] for row in rows if not feature_path(self.cache_dir, corpus, row["track_id"]).is_file()
        ]
        missing = set(self.without_features)
        rows = [row for row in rows if row["track_id"] not in missing]
        sources = AudioSources(dataset_dir)  # without the download here, end-to-end training is told where it lies
        audio = {row["track_id"]: sources.resolve(corpus, row["audio"]) for row in rows} \
            if corpus in sources or feature_extractor else {}
        broken, stale, made_from = {}, [], {}
        for row in rows:  # every file read whole: found now, not when training reaches it
            track = row["track_id"]
            metadata, problem = trainable_metadata(feature_path(self.cache_dir, corpus, track))
            if problem:
                broken[track] = problem
            elif track in audio and audio_changed_size(metadata, audio[track]):
                stale.append(track)
            else:
                made_from[track] = metadata.get("audio_sha256", "")
        if broken:
            raise ValueError(
                f"{self.cache_dir}: the feature files of {corpus} {split} tracks {list(broken)[:5]}"
                + (f" and {len(broken) - 5} more" if len(broken) > 5 else "")
                + f" cannot be trained on ({next(iter(broken.values()))}); run training/extract_features.py on the "
                "dataset again, which extracts them anew."
            )
        if stale:
            raise ValueError(
                f"{self.cache_dir}: the features of {corpus} {split} tracks {stale[:5]}"
                + (f" and {len(stale) - 5} more" if len(stale) > 5 else "")
                + " were made from other audio than their files hold now (another size); run "
                "training/extract_features.py on the dataset again, which extracts them anew."
            )
        self.track_ids = [row["track_id"] for row in rows]
        # The audio the features were made from: a run resumed on features made again from other audio is refused.
        made = "\n".join(f"{track}:{made_from[track]}" for track in self.track_ids)
        self.features_digest = hashlib.sha256(made.encode()).hexdigest()
        self.audio = [audio[track] for track in self.track_ids] if feature_extractor else None
        width = len(self.task["labels"])
        self.targets = np.stack([task_targets(row, self.task) for row in rows]) if rows else np.zeros((0, width), np.float32)

    def __len__(self) -> int:
        return len(self.track_ids)

    def track_embedding(self, index: int) -> torch.Tensor:
        """The track's cached chunk embeddings averaged weighted by duration, as the model pools them."""
        cached = load_track_features(self.cache_dir, self.corpus, self.track_ids[index], self.layers)
        weights = cached["chunk_durations"]
        return (cached["chunk_embeddings"] * weights[:, None]).sum(0) / weights.sum()

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = load_track_features(self.cache_dir, self.corpus, self.track_ids[index], self.layers)
        if self.feature_extractor is not None:
            chunks = list(self.feature_extractor.iter_chunks(self.audio[index]))
            width = max(len(chunk) for chunk in chunks)
            values = torch.zeros(len(chunks), width)
            for row, chunk in enumerate(chunks):
                values[row, : len(chunk)] = torch.from_numpy(chunk)
            del item["chunk_embeddings"]
            item["input_values"] = values
        item["labels"] = torch.from_numpy(self.targets[index])
        item["index"] = torch.tensor(index)
        return item


class EmbeddingCorpus(torch.utils.data.Dataset):
    """Precomputed track vectors (tracks, dim) with targets (tracks, labels) as one-chunk examples without chords:
    other features (a probe's, say) through the same heads and training loop."""

    def __init__(self, embeddings: np.ndarray, targets: np.ndarray, track_ids: Sequence[str], task: Mapping[str, Any]):
        if not len(embeddings) == len(targets) == len(track_ids):
            raise ValueError(f"{len(embeddings)} embeddings, {len(targets)} target rows, {len(track_ids)} track ids")
        self.embeddings = torch.as_tensor(np.asarray(embeddings), dtype=torch.float32)
        self.targets = np.asarray(targets, dtype=np.float32)
        self.track_ids, self.task, self.without_audio, self.without_features = list(track_ids), dict(task), [], []

    def __len__(self) -> int:
        return len(self.track_ids)

    def track_embedding(self, index: int) -> torch.Tensor:
        return self.embeddings[index]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        no_chord = torch.zeros(1, dtype=torch.long)
        return {
            "chunk_embeddings": self.embeddings[index][None],
            "chunk_durations": torch.ones(1),
            "chord_root_ids": no_chord,
            "chord_quality_ids": no_chord,
            "chord_mask": no_chord,
            "mode_ids": torch.tensor(0),
            "labels": torch.from_numpy(self.targets[index]),
            "index": torch.tensor(index),
        }


def crop_chunks(item: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Music2Emo's training augmentation: a random run of consecutive chunks [start, end), start uniform over the
    chunks and end uniform after it. Here the run is consecutive in time (the original sorted chunk files as
    strings, so segment_10 came before segment_2)."""
    key = "input_values" if "input_values" in item else "chunk_embeddings"
    n = len(item[key])
    start = int(torch.randint(n, (1,), generator=generator))
    end = int(torch.randint(start + 1, n + 1, (1,), generator=generator))
    return {**item, key: item[key][start:end], "chunk_durations": item["chunk_durations"][start:end]}


def collate(items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack items, padding the chunk axis (and, for audio, the sample axis) with zeros and `chunk_mask` 0."""
    key = "input_values" if "input_values" in items[0] else "chunk_embeddings"
    chunks = max(len(item[key]) for item in items)
    tail = tuple(max(item[key].shape[d] for item in items) for d in range(1, items[0][key].dim()))
    values = items[0][key].new_zeros((len(items), chunks, *tail))
    durations = torch.zeros(len(items), chunks)
    mask = torch.zeros(len(items), chunks, dtype=torch.long)
    for row, item in enumerate(items):
        n = len(item[key])
        values[row][tuple(slice(0, size) for size in item[key].shape)] = item[key]
        durations[row, :n] = item["chunk_durations"]
        mask[row, :n] = 1
    batch = {key: values, "chunk_durations": durations, "chunk_mask": mask}
    batch.update({name: torch.stack([item[name] for item in items]) for name in _STACKED if name in items[0]})
    return batch


def label_priors(targets: np.ndarray) -> np.ndarray:
    """Per-label positive rate over the labelled rows, floored at 1/rows so a label without positives keeps a
    finite class-balance weight."""
    known = ~np.isnan(targets)
    rows = max(int(known.any(axis=1).sum()), 1)
    positives = np.where(known, targets, 0).sum(axis=0)
    counts = np.maximum(known.sum(axis=0), 1)
    return np.maximum(positives / counts, 1 / rows).astype(np.float32)


__all__ = ["CachedCorpus", "EmbeddingCorpus", "collate", "crop_chunks", "label_priors", "task_targets"]
