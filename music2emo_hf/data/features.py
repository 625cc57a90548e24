"""The feature cache: per track, the backbone's per-chunk layer means and the harmony tokens, computed once
(`training/extract_features.py`) so training never runs MERT or the chord recogniser again.

    OUT/features/<name>/manifest.json                    what made the features (model, layers, vocabularies...)
    OUT/features/<name>/<corpus>/<track_id>.safetensors  layer_embeddings (chunks, layers, hidden), chunk_durations,
                                                         chord_root_ids, chord_quality_ids, chord_mask, mode_id
    OUT/features/<name>/errors-rank<R>.jsonl             tracks the last run could not read, one JSON line each

A track's file appears only once complete (written beside it, then renamed). Its metadata names the track, its
corpus and the cached layers, so a file is readable without the manifest, and the audio it was made from (size,
mtime, sha256), so a rerun can tell features that are done from features of a file since replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from ..atomic import file_sha256, write_atomic
from ..feature_extraction_music2emo import Music2EmoFeatureExtractor
from ..harmony import HarmonyAnalyzer
from ..modeling_music2emo import Music2EmoModel
from .layout import FEATURES_DIR

MANIFEST = "manifest.json"


def feature_dir(dataset_dir: str | os.PathLike, name: str) -> Path:
    """The cache `name` of a prepared dataset: one folder under its features/, never somewhere else."""
    if not name or name in (".", "..") or "/" in name or os.sep in name:
        raise ValueError(f"--name {name!r}: a feature cache is one folder under {Path(dataset_dir) / FEATURES_DIR}; "
                         "give a plain folder name (no '/').")
    return Path(dataset_dir) / FEATURES_DIR / name


def feature_path(directory: str | os.PathLike, corpus: str, track_id: str) -> Path:
    """Where a track's features live. Track ids may hold '/' (Emotify's genre/number): they become sub-folders."""
    parts = track_id.split("/")
    if not track_id or any(part in ("", ".", "..") for part in parts) or "/" in corpus or corpus in ("", ".", ".."):
        raise ValueError(f"corpus {corpus!r} / track_id {track_id!r} cannot name a file under {directory}.")
    return Path(directory, corpus, *parts[:-1], parts[-1] + ".safetensors")


def manifest_for(
    model: Music2EmoModel,
    extractor: Music2EmoFeatureExtractor,
    harmony: HarmonyAnalyzer,
    model_name: str,
    layers: Sequence[int],
    dtype: str,
) -> dict[str, Any]:
    """Everything that changes the cached numbers, which two runs sharing a cache must agree on, and the name of
    the model that made it (a record only: a copy of that model elsewhere makes the same numbers)."""
    config = model.config
    return {
        "model": model_name,
        "backbone_sha256": backbone_fingerprint(model),
        "layers": list(layers),
        "hidden_size": config.backbone_config.hidden_size,
        "sampling_rate": extractor.sampling_rate,
        "chunk_seconds": extractor.chunk_seconds,
        "harmony_ensemble_size": harmony.ensemble_size,
        "chord_roots": list(config.chord_roots),
        "chord_qualities": list(config.chord_qualities),
        "max_chords": config.max_chords,
        "dtype": dtype,
    }


def backbone_fingerprint(model: Music2EmoModel) -> str:
    """sha256 of the backbone's weights (names, dtypes, shapes, bytes): features from one backbone are meaningless
    to heads trained on another, even of the same architecture (two `music2emo init` seeds, say)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.backbone.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def check_cache_fits(directory: str | os.PathLike, model: Music2EmoModel, named: str = "this model") -> dict[str, Any]:
    """The manifest of the cache at `directory`, after checking its features are what `model` would compute: same
    backbone weights, its pooled layers among the cached ones, same chunking and chord vocabulary. `named`: the
    model as the user gave it (`--teacher PATH`), for the message."""
    manifest = read_manifest(directory)
    if manifest is None:
        raise FileNotFoundError(
            f"{directory}: no feature cache (no {MANIFEST}); make it with training/extract_features.py."
        )
    config = model.config
    wanted = {
        "backbone_sha256": backbone_fingerprint(model),
        "sampling_rate": config.sampling_rate,
        "chunk_seconds": config.chunk_seconds,
        "chord_roots": list(config.chord_roots),
        "chord_qualities": list(config.chord_qualities),
        "max_chords": config.max_chords,
    }
    problems = [f"{key}: cached {manifest.get(key)!r}, model {value!r}" for key, value in wanted.items() if manifest.get(key) != value]
    missing_layers = [layer for layer in config.pooled_layers if layer not in manifest.get("layers", [])]
    if missing_layers:
        problems.append(f"layers {missing_layers} of the model's pooled_layers are not cached (cached: {manifest.get('layers')})")
    if problems:
        tuned = (" (A model whose backbone was fine-tuned, --finetune-backbone, fits no shared cache: its run's "
                 "results.json scores it.)") if manifest.get("backbone_sha256") != wanted["backbone_sha256"] \
            and not config.untrained else ""
        raise ValueError(
            f"{named}: the feature cache {directory} was not made for it ({'; '.join(problems)}). Extract features "
            "with this model (training/extract_features.py --model ...), or train the model the cache was made with."
            + tuned
        )
    return manifest


def read_manifest(directory: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(directory) / MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def check_manifest(directory: str | os.PathLike, manifest: dict[str, Any], write: bool) -> None:
    """Refuse to mix features made otherwise into an existing cache; with `write`, record the manifest of a new one.

    The manifest file is replaced whole, so a reader sees it complete or not at all."""
    directory = Path(directory)
    existing = read_manifest(directory)
    if existing is not None:
        differences = [key for key in sorted((existing | manifest).keys() - {"model"})
                       if existing.get(key) != manifest.get(key)]
        if differences:
            shown = "; ".join(f"{k}: cached {existing.get(k)!r}, asked {manifest.get(k)!r}" for k in differences)
            raise ValueError(
                f"{directory} holds features made with other settings ({shown}). Pass another --name, or delete "
                "that folder to rebuild it."
            )
        return
    if write:
        write_atomic(directory / MANIFEST, json.dumps(manifest, indent=1) + "\n")


@torch.inference_mode()
def extract_track(
    model: Music2EmoModel,
    extractor: Music2EmoFeatureExtractor,
    harmony: HarmonyAnalyzer,
    audio: str,
    layers: Sequence[int],
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """One file streamed chunk by chunk as the pipeline streams it (so memory is bounded by one chunk): per chunk
    the time mean of each of `layers`, stored as `dtype`, and the track's harmony in the model's chord vocabulary.

    Raises what decoding raises (`AudioDecodeError`, `FileNotFoundError`) for a bad or missing file."""
    rate = extractor.sampling_rate
    embeddings, durations, windows = [], [], []
    offset = 0.0
    for chunk, heard in extractor.iter_chunks(audio, heard_rate=harmony.sampling_rate):
        windows.append(harmony.analyze_window(heard, harmony.sampling_rate, offset))
        values = torch.from_numpy(chunk)[None].to(model.device, model.dtype)
        lengths = torch.tensor([len(chunk)], device=model.device)
        embeddings.append(model.embed_chunks(values, lengths, layers).reshape(len(layers), -1))
        durations.append(len(chunk) / rate)
        offset += len(chunk) / rate
    stored = torch.stack(embeddings).to("cpu", dtype).contiguous()
    if not torch.isfinite(stored).all():  # else training refuses the file, and every rerun would write it again
        beyond = "" if dtype == torch.float32 else f", or beyond {str(dtype).removeprefix('torch.')}'s range"
        raise ValueError(f"{audio}: the model's embeddings of it are not finite (NaN or infinity{beyond}), so its "
                         "features are not written.")
    tokens = model.harmony_inputs([harmony.combine(windows)], device="cpu")
    return {
        "layer_embeddings": stored,
        "chunk_durations": torch.tensor(durations, dtype=torch.float32),
        "chord_root_ids": tokens["chord_root_ids"][0],
        "chord_quality_ids": tokens["chord_quality_ids"][0],
        "chord_mask": tokens["chord_mask"][0],
        "mode_id": tokens["mode_ids"][0],
    }


def _sorted_metadata(blob: bytes) -> bytes:
    """safetensors writes `__metadata__` from a hash map, in an order that changes from one save to the next
    (safetensors issue #584), so the same features would give different bytes. Its keys are sorted here."""
    size = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + size])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # tensor data stays 8-byte aligned, as safetensors lays it out
    return len(text).to_bytes(8, "little") + text + blob[8 + size :]


def audio_fingerprint(audio: str | os.PathLike) -> dict[str, str]:
    """What identifies an audio file's contents, as recorded with its features (taken before decoding, so a file
    changed while it was read no longer matches)."""
    try:
        stat = os.stat(audio)
    except FileNotFoundError:
        raise FileNotFoundError(f"{os.fspath(audio)}: no such file.") from None
    return {"audio_size": str(stat.st_size), "audio_mtime_ns": str(stat.st_mtime_ns), "audio_sha256": file_sha256(audio)}


def trainable_metadata(path: str | os.PathLike) -> tuple[dict[str, str] | None, str | None]:
    """(a features file's metadata, None), or (None, why training cannot read it): its header or embeddings cannot
    be read (a disk fault, a copy cut short), or the embeddings hold NaN or infinity (a fault that kept the header
    whole, which would otherwise pass for a diverged training)."""
    try:
        with safe_open(path, framework="pt") as file:
            if not torch.isfinite(file.get_tensor("layer_embeddings")).all():
                return None, "its embeddings hold NaN or infinity"
            return file.metadata() or {}, None
    except SafetensorError as error:
        return None, f"it cannot be read ({error})"


def audio_changed_size(metadata: Mapping[str, str], audio: str | os.PathLike) -> bool:
    """Whether `audio` is no longer the size of the file its features were made from (another recording put in its
    place): told from its size alone, as training checks every track at its start. A file that cannot be reached
    (not on this machine, unreadable) or features that never recorded the size tell nothing."""
    if "audio_size" not in metadata:
        return False
    try:
        return metadata["audio_size"] != str(os.stat(audio).st_size)
    except OSError:
        return False


def features_are_current(directory: str | os.PathLike, corpus: str, track_id: str, audio: str | os.PathLike) -> bool:
    """Whether the track has cached features made from `audio` as it is now: same size and mtime, or, where only
    the mtime moved (a copied dataset), the same sha256. A missing `audio` cannot be compared, and its features
    stand. A features file training cannot read (`trainable_metadata`) is not current."""
    path = feature_path(directory, corpus, track_id)
    recorded = trainable_metadata(path)[0] if path.is_file() else None
    if recorded is None:
        return False
    try:
        stat = os.stat(audio)
    except FileNotFoundError:
        return True
    if recorded.get("audio_size") != str(stat.st_size):
        return False
    return recorded["audio_mtime_ns"] == str(stat.st_mtime_ns) or (
        recorded["audio_sha256"] == audio_fingerprint(audio)["audio_sha256"]
    )


def save_track_features(
    directory: str | os.PathLike,
    corpus: str,
    track_id: str,
    layers: Sequence[int],
    tensors: dict[str, torch.Tensor],
    audio: dict[str, str],
) -> Path:
    """Write beside the final name, then rename: a killed run never leaves a partial file that reads as done.
    `audio` is the `audio_fingerprint` of the file the features come from. The same features of the same file
    always give the same bytes."""
    path = feature_path(directory, corpus, track_id)
    metadata = {"track_id": track_id, "corpus": corpus, "layers": json.dumps(list(layers)), **audio}
    write_atomic(path, _sorted_metadata(save(tensors, metadata=metadata)))
    return path


def load_track_features(
    directory: str | os.PathLike, corpus: str, track_id: str, layers: Sequence[int] | None = None
) -> dict[str, torch.Tensor]:
    """One track's cached features as `Music2EmoModel` inputs (add a batch axis): `chunk_embeddings` (chunks,
    len(layers) * hidden) float32 — the requested layers concatenated in the order given, as
    `Music2EmoModel.embed_chunks(..., layers)` returns them (default: every cached layer) — `chunk_durations`,
    `chord_root_ids`, `chord_quality_ids`, `chord_mask` (max_chords,) and `mode_ids` (0-d)."""
    path = feature_path(directory, corpus, track_id)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no cached features for {corpus} track {track_id!r}; run training/extract_features.py on its "
            "dataset."
        )
    try:
        with safe_open(path, framework="pt") as file:
            cached = json.loads(file.metadata()["layers"])
            tensors = {key: file.get_tensor(key) for key in file.keys()}
    except SafetensorError as error:
        raise ValueError(
            f"{path}: the feature file is damaged ({error}); run training/extract_features.py on its dataset again, "
            "which extracts it anew."
        ) from None
    layers = cached if layers is None else list(layers)
    missing = [layer for layer in layers if layer not in cached]
    if missing:
        raise KeyError(
            f"layers {missing} are not in the feature cache {directory} (it holds layers {cached}); extract them "
            "into another cache with --layers."
        )
    picked = tensors["layer_embeddings"][:, [cached.index(layer) for layer in layers]].float()
    return {
        "chunk_embeddings": picked.reshape(len(picked), -1),
        "chunk_durations": tensors["chunk_durations"],
        "chord_root_ids": tensors["chord_root_ids"],
        "chord_quality_ids": tensors["chord_quality_ids"],
        "chord_mask": tensors["chord_mask"],
        "mode_ids": tensors["mode_id"],
    }


__all__ = [
    "MANIFEST",
    "audio_changed_size",
    "audio_fingerprint",
    "backbone_fingerprint",
    "check_cache_fits",
    "check_manifest",
    "extract_track",
    "feature_dir",
    "feature_path",
    "features_are_current",
    "load_track_features",
    "manifest_for",
    "read_manifest",
    "save_track_features",
    "trainable_metadata",
]
