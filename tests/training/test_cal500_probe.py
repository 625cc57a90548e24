"""Real audio features with real labels: CAL500's MULAN release (68 Marsyas features -> 18 emotion concepts, 502
songs) through the same heads and training loop, 5-fold, against a logistic-regression probe computed here on the
same folds, its C chosen on the validation part of each fold only (the test fold is never seen by either)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import HubertConfig

from music2emo_hf import Music2EmoConfig, Music2EmoFeatureExtractor, Music2EmoModel
from music2emo_hf.configuration_music2emo import corpus_task
from music2emo_hf.data.cached import EmbeddingCorpus
from music2emo_hf.data.cal500 import read_arff
from music2emo_hf.metrics import tag_metrics
from tests.conftest import require_fixtures

import engine  # noqa: E402,I001  (training/, put on sys.path by conftest)

pytestmark = pytest.mark.slow  # trains five folds


PROBE_C = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 1.0)


def probe_scores(features: np.ndarray, labels: np.ndarray, train, validation, test) -> tuple[float, float]:
    """(C chosen on `validation`, macro ROC-AUC on `test`) of one-vs-rest logistic regression on standardised
    features, fitted on `train` only."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def auc(probe, rows) -> float:
        return tag_metrics(labels[rows], probe.predict_proba(features[rows]))["roc_auc_macro"]

    probes = {c: make_pipeline(StandardScaler(), OneVsRestClassifier(LogisticRegression(C=c, solver="liblinear")))
              .fit(features[train], labels[train]) for c in PROBE_C}
    best = max(PROBE_C, key=lambda c: auc(probes[c], validation))
    return best, auc(probes[best], test)


def test_five_fold_macro_roc_auc_matches_a_tuned_linear_probe(tmp_path):
    features, labels, ids = read_arff(require_fixtures("cal500", "CAL500.orig.arff"))
    task = corpus_task("cal500")
    # The 68 features stand where a backbone's pooled layers would: one "chunk" per song, no chords.
    backbone = HubertConfig(hidden_size=68, num_hidden_layers=1, num_attention_heads=4, intermediate_size=8,
                            conv_dim=[8] * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    recipe = engine.Recipe(name="probe", optimizer="adamw", batch_size=32, epoch_mode="cycle", max_epochs=100,
                           selection="joint_score", chunk_crop=False, checkpoint_every=10**6)
    folds = np.array_split(np.random.default_rng(0).permutation(len(features)), 5)
    accelerator = engine.make_accelerator()
    scores, probes = [], []
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
        probes.append(probe_scores(features, labels, train, validation, test))
    probe = [auc for _, auc in probes]
    print(f"CAL500 MULAN 5-fold macro ROC-AUC: heads {np.mean(scores):.4f} (folds {np.round(scores, 4).tolist()}), "
          f"tuned logistic-regression probe {np.mean(probe):.4f} (folds {np.round(probe, 4).tolist()}, "
          f"C {[c for c, _ in probes]})")  # the figures of docs/training.md (-s)
    assert np.mean(probe) > 0.55  # the features carry the labels: a probe well above chance (0.5)
    assert np.mean(scores) >= np.mean(probe) - 0.01, (scores, probe)  # the heads are at least on par with it
