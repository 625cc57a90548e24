"""Losses of both emotion languages and of distillation, masked so one batch may mix corpora whose labels differ.

NaN in a target marks a missing value (a whole row of NaN: a track not labelled for that task); every loss averages
over the known values only and returns None when there are none.

- `tag_loss`: BCE on multi-label logits, optionally Music2Emo's class-balanced weighting (`class_balance_weights`).
- `regression_loss`: MSE on the task's native scale (valence/arousal on 1-9).
- Distillation, two ways (ORIGINALS §1.6, defect 6):
  `softmax_kl` is Music2Emo's: KL between softmaxes over all outputs of a head, which for 56 independent tags
  discards per-tag calibration and for two regression outputs carries only V - A;
  `per_output` treats each output as what it is: per-tag BCE against the teacher's probabilities (times T², as
  Hinton et al. scale soft targets) and MSE against the teacher's values.
"""

from __future__ import annotations

import torch
from torch import nn

KD_MODES = ("softmax_kl", "per_output")


def class_balance_weights(priors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Music2Emo's BCE weights from per-tag positive rates p: `pos_weight = 1/p`, `weight = 2 / (1 + 1/p)`, so both
    classes weigh alike and a sigmoid of 0.5 means "at the tag's base rate". p must lie in (0, 1]: floor the rate of
    a tag without positives (at 1/N, say) first."""
    if not ((priors > 0) & (priors <= 1)).all():
        raise ValueError("tag priors must lie in (0, 1]; floor tags without positives before weighting")
    pos_weight = 1 / priors
    return pos_weight, 2 / (1 + pos_weight)


def tag_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    pos_weight: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """Mean BCE over the known (non-NaN) targets; `pos_weight`/`weight` are per tag, as `BCEWithLogitsLoss`'s.
    Targets may be soft (probabilities)."""
    known = ~torch.isnan(targets)
    if not known.any():
        return None
    expand = (lambda w: None if w is None else w.to(logits.dtype).expand_as(logits)[known])
    return nn.functional.binary_cross_entropy_with_logits(
        logits[known], targets[known].to(logits.dtype), weight=expand(weight), pos_weight=expand(pos_weight)
    )


def regression_loss(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor | None:
    """Mean squared error over the known (non-NaN) targets."""
    known = ~torch.isnan(targets)
    if not known.any():
        return None
    return nn.functional.mse_loss(predictions[known], targets[known].to(predictions.dtype))


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, kind: str, mode: str, temperature: float = 1.0
) -> torch.Tensor:
    """How far a head's outputs (batch, outputs) are from a frozen teacher's; `kind` is the task type
    ("multilabel" logits or "regression" values), `mode` one of `KD_MODES`."""
    teacher = teacher.detach().to(student.dtype)
    if mode == "softmax_kl":
        return nn.functional.kl_div(
            nn.functional.log_softmax(student / temperature, dim=-1),
            nn.functional.softmax(teacher / temperature, dim=-1),
            reduction="batchmean",
        )
    if mode != "per_output":
        raise ValueError(f"distillation mode must be one of {KD_MODES}, got {mode!r}")
    if kind == "multilabel":
        soft = torch.sigmoid(teacher / temperature)
        return nn.functional.binary_cross_entropy_with_logits(student / temperature, soft) * temperature**2
    return nn.functional.mse_loss(student, teacher)


__all__ = ["KD_MODES", "class_balance_weights", "distillation_loss", "regression_loss", "tag_loss"]
