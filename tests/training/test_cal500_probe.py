"""Real audio features with real labels: CAL500's MULAN release (68 Marsyas features -> 18 emotion concepts, 502
songs) through the same heads and training loop, 5-fold. A logistic-regression probe reaches macro ROC-AUC of about
0.575 (PROVENANCE.md); the heads must reach at least 0.57."""

from __future__ import annotations

import numpy as np
import torch
from transformers import HubertConfig

from music2emo_hf import Music2EmoConfig, Music2EmoFeatureExtractor, Music2EmoModel
from music2emo_hf.configuration_music2emo import corpus_task
from music2emo_hf.data.cached import EmbeddingCorpus
from music2emo_hf.data.cal500 import read_arff
from tests.conftest import require_fixtures

import engine  # noqa: E402,I001  (training/, put on sys.path by conftest)


def test_five_fold_macro_roc_auc_beats_a_linear_probe(tmp_path):
    features, labels, ids = read_arff(require_fixtures("cal500", "CAL500.orig.arff"))
    task = corpus_task("cal500")
    # The 68 features stand where a backbone's pooled layers would: one "chunk" per song, no chords.
    backbone = HubertConfig(hidden_size=68, num_hidden_layers=1, num_attention_heads=4, intermediate_size=8,
                            conv_dim=[8] * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    recipe = engine.Recipe(name="probe", optimizer="adamw", batch_size=32, epoch_mode="cycle", max_epochs=100,
                           selection="joint_score", chunk_crop=False, checkpoint_every=10**6)
    folds = np.array_split(np.random.default_rng(0).permutation(len(features)), 5)
    accelerator = engine.make_accelerator()
    scores = []
    for k, test in enumerate(folds):
        rest = np.concatenate([fold for j, fold in enumerate(folds) if j != k])
        validation, train = rest[: len(rest) // 9], rest[len(rest) // 9 :]  # model selection never sees the test fold
        part = lambda rows: EmbeddingCorpus(features[rows], labels[rows], [ids[i] for i in rows], task)  # noqa: E731
        corpus = engine.Corpus("cal500", {"train": part(train), "validation": part(validation), "test": part(test)})
        torch.manual_seed(k)
        model = Music2EmoModel(Music2EmoConfig(backbone_config=backbone, pooled_layers=[1], tasks=[task],
                                               standardize_embeddings=True))  # the faithful head's widths
        trainer = engine.Trainer(recipe, model, Music2EmoFeatureExtractor(), [corpus], tmp_path / f"fold{k}",
                                 accelerator=accelerator)
        scores.append(trainer.train()["best"]["test"]["cal500"]["roc_auc_macro"])
    print(f"CAL500 MULAN 5-fold macro ROC-AUC {np.mean(scores):.4f} (folds {np.round(scores, 4).tolist()})")
    assert np.mean(scores) >= 0.57, scores
