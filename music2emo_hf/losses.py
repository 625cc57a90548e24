"""Losses of both emotion languages and of distillation, masked so one batch may mix corpora whose labels differ.

NaN in a target marks a missing value (a whole row of NaN: a track not labelled for that task); every loss averages
over the known values only and returns None when there are none.

- `tag_loss`: BCE on multi-label logits, optionally Music2Emo's class-balanced weighting (`class_balance_weights`).
- `regression_loss`: MSE on the task's native scale (valence/arousal on 1-9).
- Zero-shot (ORIGINALS §2.6): `cosine_triplet_loss` against a positive (the mean embedding of a track's labels or
  their cluster centres) and a negative from `sample_negatives` (the paper's mean of k random non-positive labels,
  or the k hardest), and `alignment_regularizer`, which pushes apart tracks whose labels share no cluster.
- Distillation, two ways (ORIGINALS §1.6, defect 6):
  `softmax_kl` is Music2Emo's: KL between softmaxes over all outputs of a head, which for 56 independent tags
  discards per-tag calibration and for two regression outputs carries only V - A;
  `per_output` treats each output as what it is: per-tag BCE against the teacher's probabilities (times T², as
  Hinton et al. scale soft targets) and MSE against the teacher's values. Both scale by T² (Music2Emo used T = 1,
  where that changes nothing).
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
        ) * temperature**2
    if mode != "per_output":
        raise ValueError(f"distillation mode must be one of {KD_MODES}, got {mode!r}")
    if kind == "multilabel":
        soft = torch.sigmoid(teacher / temperature)
        return nn.functional.binary_cross_entropy_with_logits(student / temperature, soft) * temperature**2
    return nn.functional.mse_loss(student, teacher)


def cosine_triplet_loss(
    anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, margin: float = 1.0
) -> torch.Tensor:
    """mean(relu(cos(a, n) - cos(a, p) + margin)) over rows."""
    similarity = nn.functional.cosine_similarity
    return torch.relu(similarity(anchors, negatives, dim=-1) - similarity(anchors, positives, dim=-1) + margin).mean()


def sample_negatives(
    label_embeddings: torch.Tensor,
    positives: torch.Tensor,
    count: int,
    generator: torch.Generator,
    anchors: torch.Tensor | None = None,
) -> torch.Tensor:
    """A negative target per row of `positives` (rows, labels) bool: the mean embedding of `count` labels drawn
    uniformly with replacement among the row's non-positive labels (the paper's choice, redrawn every step), or,
    given `anchors`, of the `count` non-positive labels nearest each anchor (hard negatives). A row whose labels are
    all positive has no negative and gets NaN."""
    candidates = ~positives
    if anchors is None:
        weights = candidates.float()
        usable = weights.sum(dim=1) > 0
        weights[~usable] = 1.0
        picked = torch.multinomial(weights.cpu(), count, replacement=True, generator=generator).to(positives.device)
        chosen = label_embeddings[picked].mean(dim=1)
    else:
        similarity = nn.functional.normalize(anchors, dim=-1) @ nn.functional.normalize(label_embeddings, dim=-1).T
        similarity = similarity.masked_fill(positives, float("-inf"))
        nearest = similarity.topk(min(count, label_embeddings.shape[0]), dim=1)
        weights = torch.isfinite(nearest.values).float()
        chosen = (label_embeddings[nearest.indices] * weights[..., None]).sum(dim=1) / weights.sum(dim=1, keepdim=True)
        usable = candidates.any(dim=1)
    return chosen.masked_fill(~usable[:, None], float("nan"))


def alignment_regularizer(embeddings: torch.Tensor, clusters: torch.Tensor) -> torch.Tensor | None:
    """Mean over rows of the mean cosine similarity to the rows whose label clusters (rows, clusters) bool share
    none with theirs; minimising it pushes apart tracks of different clusters, across corpora. The paper compared one
    random positive cluster per track (so two tracks sharing a cluster could count as different) and added a
    constant (relu(x + 1) of a cosine) that changes no gradient; both are left out. None when no row has such a
    partner."""
    unit = nn.functional.normalize(embeddings, dim=-1)
    different = (clusters.float() @ clusters.float().T) == 0
    different.fill_diagonal_(False)
    counts = different.sum(dim=1)
    if not (counts > 0).any():
        return None
    mean_similarity = ((unit @ unit.T) * different).sum(dim=1) / counts.clamp_min(1)
    return mean_similarity[counts > 0].mean()


__all__ = [
    "KD_MODES",
    "alignment_regularizer",
    "class_balance_weights",
    "cosine_triplet_loss",
    "distillation_loss",
    "regression_loss",
    "sample_negatives",
    "tag_loss",
]
