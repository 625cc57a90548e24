"""Losses: Music2Emo's class-balanced BCE exactly as the original computed it, NaN-masked mixing of corpora, and
both distillation modes (the original's softmax-KL and the per-output fix)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from music2emo_hf.losses import (
    alignment_regularizer,
    class_balance_weights,
    cosine_triplet_loss,
    distillation_loss,
    regression_loss,
    sample_negatives,
    tag_loss,
)


def test_class_balanced_bce_is_the_originals():
    torch.manual_seed(0)
    logits, targets = torch.randn(8, 56), (torch.rand(8, 56) < 0.1).float()
    priors = torch.rand(56) * 0.09 + 0.006  # probas_train's range
    pos_weight, weight = class_balance_weights(priors)
    original = nn.BCEWithLogitsLoss(pos_weight=1 / priors, weight=2 / (1 + 1 / priors), reduction="mean")
    torch.testing.assert_close(tag_loss(logits, targets, pos_weight, weight), original(logits, targets))
    with pytest.raises(ValueError, match=r"priors must lie in \(0, 1\]"):
        class_balance_weights(torch.tensor([0.0, 0.5]))


def test_missing_labels_are_left_out():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.5]])
    targets = torch.tensor([[1.0, float("nan")], [float("nan")] * 2])
    expected = nn.functional.binary_cross_entropy_with_logits(torch.tensor([2.0]), torch.tensor([1.0]))
    torch.testing.assert_close(tag_loss(logits, targets), expected)
    assert tag_loss(logits, torch.full((2, 2), float("nan"))) is None
    values, va = torch.tensor([[5.0, 6.0], [3.0, 3.0]]), torch.tensor([[7.0, float("nan")], [float("nan"), 1.0]])
    torch.testing.assert_close(regression_loss(values, va), torch.tensor((4.0 + 4.0) / 2))


def test_softmax_kl_is_music2emos_distillation():
    torch.manual_seed(1)
    student, teacher = torch.randn(4, 56), torch.randn(4, 56)
    original = nn.KLDivLoss(reduction="batchmean")(nn.functional.log_softmax(student, -1), nn.functional.softmax(teacher, -1))
    torch.testing.assert_close(distillation_loss(student, teacher, "multilabel", "softmax_kl"), original)
    softened = nn.KLDivLoss(reduction="batchmean")(nn.functional.log_softmax(student / 2, -1),
                                                    nn.functional.softmax(teacher / 2, -1)) * 4  # T^2 keeps gradients' scale
    torch.testing.assert_close(distillation_loss(student, teacher, "multilabel", "softmax_kl", temperature=2.0), softened)
    # On two regression outputs the softmax sees only their difference: shifting both by 3 changes nothing.
    va = torch.tensor([[5.0, 6.0]])
    assert distillation_loss(va, va + 3, "regression", "softmax_kl") < 1e-6


def test_per_output_distillation_matches_each_output():
    student, teacher = torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, -1.0]])
    expected = nn.functional.binary_cross_entropy_with_logits(student / 2, torch.sigmoid(teacher / 2)) * 4
    torch.testing.assert_close(distillation_loss(student, teacher, "multilabel", "per_output", temperature=2.0), expected)
    va = torch.tensor([[5.0, 6.0]])
    torch.testing.assert_close(distillation_loss(va, va + 3, "regression", "per_output"), torch.tensor(9.0))
    teacher.requires_grad_(True)
    distillation_loss(student.requires_grad_(True), teacher, "multilabel", "per_output").backward()
    assert teacher.grad is None  # teachers are frozen
    with pytest.raises(ValueError, match="distillation mode"):
        distillation_loss(student, teacher, "multilabel", "mse")


def test_cosine_triplet_loss_is_the_papers():
    anchor, positive, negative = torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 5.0]])
    torch.testing.assert_close(cosine_triplet_loss(anchor, positive, negative, margin=1.0), torch.tensor(0.0))
    torch.testing.assert_close(cosine_triplet_loss(anchor, negative, positive, margin=1.0), torch.tensor(2.0))


def test_negatives_are_random_non_positive_labels_or_the_nearest_ones():
    labels = torch.eye(4)
    positives = torch.tensor([[True, False, False, False], [True, True, True, True]])
    random = sample_negatives(labels, positives, 50, torch.Generator().manual_seed(0))
    assert random[0, 0] == 0 and torch.isclose(random[0].sum(), torch.tensor(1.0)) and random[1].isnan().all()
    many = sample_negatives(labels, positives[:1], 3000, torch.Generator().manual_seed(1))  # the mean of one-hot draws
    torch.testing.assert_close(many[0, 1:], torch.full((3,), 1 / 3), atol=0.03, rtol=0)  # each non-positive alike
    anchors = torch.tensor([[0.0, 1.0, 0.5, 0.0], [1.0, 0.0, 0.0, 0.0]])
    hard = sample_negatives(labels, positives, 2, torch.Generator(), anchors=anchors)
    torch.testing.assert_close(hard[0], torch.tensor([0.0, 0.5, 0.5, 0.0]))  # the two nearest non-positives


def test_the_alignment_regularizer_compares_tracks_sharing_no_cluster():
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    clusters = torch.tensor([[True, False], [False, True], [True, True]])  # track 3 shares a cluster with both
    torch.testing.assert_close(alignment_regularizer(embeddings, clusters), torch.tensor(0.0))  # only 1 vs 2: cos 0
    assert alignment_regularizer(embeddings, torch.ones(3, 2, dtype=torch.bool)) is None
    # A cosine, whatever the lengths, averaged over the rows that have a partner (track 3 has none).
    apart = torch.tensor([[1.0, 0.0], [2.0, 2.0], [0.0, 1.0]])
    torch.testing.assert_close(alignment_regularizer(apart, clusters), torch.tensor(2**-0.5))
