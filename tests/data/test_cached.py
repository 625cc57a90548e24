"""Training examples from a prepared corpus: targets on the model's scale, padding, the chunk crop, label priors."""

from __future__ import annotations

import numpy as np
import torch

from music2emo_hf.configuration_music2emo import corpus_task
from music2emo_hf.data.cached import EmbeddingCorpus, collate, crop_chunks, label_priors, task_targets


def test_targets_on_the_models_scale():
    va = corpus_task("pmemo")
    row = {"valence_normalized": 0.5, "arousal_normalized": None}  # PMEmo 0.75 on 0-1: 1 + 8 * 0.75 = 7
    np.testing.assert_allclose(task_targets(row, va), [7.0, np.nan])
    moods = task_targets({"moods": ["sad", "calm"], "mood_targets": [1.0] * 56}, corpus_task("mtg_jamendo"))
    assert moods.sum() == 2 and moods[corpus_task("mtg_jamendo")["labels"].index("sad")] == 1
    unrated = task_targets({"moods": [], "mood_targets": None}, corpus_task("cal500"))  # listed, never rated
    assert unrated.shape == (18,) and np.isnan(unrated).all()


def test_collate_pads_chunks_and_masks_them():
    corpus = EmbeddingCorpus(np.ones((2, 4)), np.zeros((2, 2)), ["a", "b"], corpus_task("deam"))
    long = {**corpus[0], "chunk_embeddings": torch.ones(3, 4), "chunk_durations": torch.tensor([30.0, 30.0, 2.0])}
    batch = collate([long, corpus[1]])
    assert batch["chunk_embeddings"].shape == (2, 3, 4) and not batch["chunk_embeddings"][1, 1:].any()
    assert batch["chunk_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["chunk_durations"].tolist() == [[30.0, 30.0, 2.0], [1.0, 0.0, 0.0]]
    assert batch["labels"].shape == (2, 2) and batch["index"].tolist() == [0, 1]


def test_crop_keeps_a_run_of_consecutive_chunks():
    item = {"chunk_embeddings": torch.arange(12.0)[:, None], "chunk_durations": torch.full((12,), 30.0)}
    generator = torch.Generator().manual_seed(0)
    runs = []
    for _ in range(2000):
        kept = crop_chunks(item, generator)["chunk_embeddings"][:, 0]
        assert len(kept) >= 1 and torch.equal(kept, torch.arange(kept[0], kept[0] + len(kept)))  # in time order
        runs.append((int(kept[0]), int(kept[-1]) + 1))
    # start uniform over the 12 chunks, end uniform after it: every run is possible, the whole track 1 in 144 times
    assert len(set(runs)) == 12 * 13 // 2
    ends_last = sum(end == 12 for _, end in runs) / len(runs)  # the mean over starts s of 1 / (12 - s): about 0.26
    assert 0.2 < ends_last < 0.32


def test_label_priors_floor_labels_without_positives():
    targets = np.array([[1, 0, 0], [1, 0, 1], [0, 0, np.nan], [np.nan] * 3], dtype=np.float32)
    np.testing.assert_allclose(label_priors(targets), [2 / 3, 1 / 3, 1 / 2], rtol=1e-6)
