"""Losses: Music2Emo's class-balanced BCE exactly as the original computed it, NaN-masked mixing of corpora, and
both distillation modes (the original's softmax-KL and the per-output fix)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from music2emo_hf.losses import class_balance_weights, distillation_loss, regression_loss, tag_loss


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
