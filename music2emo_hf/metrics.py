"""Evaluation metrics of both emotion languages, equal to scikit-learn's and checked against the MediaEval
organisers' golden file (tests/test_metrics.py).

- Tags: ROC-AUC and PR-AUC (average precision), macro and micro, as the MediaEval Emotion and Theme task and the
  Music2Emo paper report them; macro-F1 of top-k and of thresholded decisions (the cross-dataset paper's metric).
- Valence/arousal: R² and RMSE per dimension, on the native scale and on [-1, 1].
- Song level: segment scores averaged per track (`song_level`), or segments voting for their top-k labels
  (`song_vote_decisions`, the cross-dataset paper's).

The tag and valence/arousal metrics are also `evaluate` modules (`load_metric("mood_tags")`,
`load_metric("valence_arousal")`), shipped in the package so they load with no Hub, and publishable as metric Spaces
as they stand (docs/publishing.md). Training and `training/evaluate_models.py` score through them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np

from .labels import RatingScale


def _tag_scores(y_score) -> np.ndarray:
    score = np.asarray(y_score, dtype=np.float64)
    if not np.isfinite(score).all():
        raise ValueError("tag scores contain NaN or infinity")
    return score


def _tag_arrays(y_true, y_score) -> tuple[np.ndarray, np.ndarray]:
    truth, score = np.asarray(y_true), np.asarray(y_score)
    if truth.ndim != 2 or truth.shape != score.shape:
        raise ValueError(f"tag metrics need (tracks, tags) arrays of one shape, got {truth.shape} and {score.shape}")
    score = _tag_scores(score)
    if truth.dtype != bool and not np.isin(truth, (0, 1)).all():  # NaN and 0.05 would count as positives
        odd = truth[~np.isin(truth, (0, 1))].ravel()[:3].tolist()
        raise ValueError(f"tag references must be 0 or 1 (or booleans), got values such as {odd}; leave out tracks "
                         "without labels, and threshold soft labels first.")
    return truth.astype(bool), score


def roc_auc_per_tag(truth: np.ndarray, score: np.ndarray) -> np.ndarray:
    """ROC-AUC of each column, as the Mann-Whitney U statistic over (positives x negatives) with tied scores ranked
    alike: the trapezoidal area scikit-learn's `roc_auc_score` computes, for all columns in one pass."""
    from scipy.stats import rankdata

    positives = truth.sum(axis=0)
    ranks = rankdata(score, axis=0)
    return ((ranks * truth).sum(axis=0) - positives * (positives + 1) / 2) / (positives * (len(truth) - positives))


def average_precision_per_tag(truth: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Average precision of each column as scikit-learn's `average_precision_score` defines it: the precision at each
    distinct score, weighted by the recall it adds."""
    out = np.empty(truth.shape[1])
    for column in range(truth.shape[1]):
        order = np.argsort(-score[:, column], kind="mergesort")
        ranked, hits = score[order, column], truth[order, column]
        last_of_tie = np.r_[ranked[1:] != ranked[:-1], True]
        true_positives = np.cumsum(hits)[last_of_tie]
        precision = true_positives / np.arange(1, len(hits) + 1)[last_of_tie]
        out[column] = np.sum(np.diff(true_positives, prepend=0) / true_positives[-1] * precision)
    return out


def tag_metrics(y_true, y_score) -> dict[str, float]:
    """ROC-AUC and PR-AUC, macro (mean over tags) and micro (all decisions pooled). The macro averages leave out the
    tags where a metric is undefined, rather than count them as 0 as torchmetrics (the authors' evaluator) does: a
    tag without positives or without negatives has no ROC-AUC (`tags_scored` says how many counted), a tag without
    positives no average precision (one whose tracks are all positive has AP 1, and counts). Computed in numpy,
    equal to scikit-learn's per-tag values (tests/test_metrics.py) and 10-30x faster, which matters when training
    scores every epoch."""
    truth, score = _tag_arrays(y_true, y_score)
    positives = truth.sum(axis=0)
    scored = (positives > 0) & (positives < len(truth))
    if not scored.any():
        raise ValueError("no tag has both positive and negative examples: AUCs are undefined")
    with_positives = positives > 0
    pooled_truth, pooled_score = truth.reshape(-1, 1), score.reshape(-1, 1)
    return {
        "roc_auc_macro": float(roc_auc_per_tag(truth[:, scored], score[:, scored]).mean()),
        "pr_auc_macro": float(average_precision_per_tag(truth[:, with_positives], score[:, with_positives]).mean()),
        "roc_auc_micro": float(roc_auc_per_tag(pooled_truth, pooled_score)[0]),
        "pr_auc_micro": float(average_precision_per_tag(pooled_truth, pooled_score)[0]),
        "tags_scored": int(scored.sum()),
    }


def top_k_decisions(y_score, k: int) -> np.ndarray:
    """The k highest-scoring tags of each row as a boolean matrix (ties broken by tag order)."""
    score = np.asarray(y_score)
    if score.ndim != 2:
        raise ValueError(f"top-k decisions need a (tracks, tags) array of scores, got shape {score.shape}")
    score = _tag_scores(score)
    if not 1 <= k <= score.shape[1]:
        raise ValueError(f"k must be in 1..{score.shape[1]}, got {k}")
    decisions = np.zeros(score.shape, dtype=bool)
    top = np.argsort(-score, axis=1, kind="stable")[:, :k]
    np.put_along_axis(decisions, top, True, axis=1)
    return decisions


def f1_scores(y_true, decisions) -> dict[str, float]:
    """Macro- and micro-F1 of boolean decisions (a tag never predicted nor present scores 0, as scikit-learn's
    `zero_division=0`)."""
    from sklearn.metrics import f1_score

    truth, decided = _tag_arrays(y_true, np.asarray(decisions, dtype=bool))
    return {
        "f1_macro": float(f1_score(truth, decided, average="macro", zero_division=0)),
        "f1_micro": float(f1_score(truth, decided, average="micro", zero_division=0)),
    }


def regression_metrics(
    y_true, y_pred, names: Sequence[str] = ("valence", "arousal"), scale: RatingScale | None = None
) -> dict[str, float]:
    """R² and RMSE per dimension on the native scale, and RMSE on [-1, 1] when `scale` is given (R² is the same
    on both: the map is affine). Rows with a NaN target are left out of that dimension."""
    from sklearn.metrics import r2_score

    if isinstance(names, str):  # tuple("valence") would be seven names
        names = (names,)
    truth = np.asarray(y_true, dtype=np.float64).reshape(len(y_true), -1)
    pred = np.asarray(y_pred, dtype=np.float64).reshape(len(y_pred), -1)
    if truth.shape != pred.shape or truth.shape[1] != len(names):
        raise ValueError(f"expected (tracks, {len(names)}) targets and predictions, got {truth.shape} and {pred.shape}")
    out = {}
    for i, name in enumerate(names):
        known = ~np.isnan(truth[:, i])
        if known.sum() < 2:
            raise ValueError(f"{name}: R² needs at least two labelled tracks, got {int(known.sum())}")
        t, p = truth[known, i], pred[known, i]
        out[f"r2_{name}"] = float(r2_score(t, p))
        out[f"rmse_{name}"] = float(np.sqrt(np.mean((t - p) ** 2)))
        if scale is not None:
            half = (scale.high - scale.low) / 2
            out[f"rmse_{name}_normalized"] = out[f"rmse_{name}"] / half
    return out


def song_level(scores, track_ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Average segment rows per track ("voting"): (tracks in first-seen order, (tracks, ...) mean scores)."""
    values = np.asarray(scores, dtype=np.float64)
    if len(values) != len(track_ids):
        raise ValueError(f"{len(values)} segment rows but {len(track_ids)} track ids")
    order = list(dict.fromkeys(track_ids))
    index = {track: i for i, track in enumerate(order)}
    rows = np.fromiter((index[t] for t in track_ids), dtype=np.int64, count=len(track_ids))
    sums = np.zeros((len(order),) + values.shape[1:])
    np.add.at(sums, rows, values)
    counts = np.bincount(rows, minlength=len(order)).reshape((-1,) + (1,) * (values.ndim - 1))
    return order, sums / counts


def song_vote_decisions(segment_scores, track_ids: Sequence[str], k: int) -> tuple[list[str], np.ndarray]:
    """The cross-dataset paper's song-level prediction: each segment votes for its top-k labels and a song takes
    the k labels with the most votes (ties go to the higher mean segment score). Returns (tracks in first-seen
    order, (tracks, labels) boolean decisions)."""
    scores = np.asarray(segment_scores, dtype=np.float64)
    order, votes = song_level(top_k_decisions(scores, k).astype(np.float64), track_ids)
    _, mean_scores = song_level(scores, track_ids)
    ranking = np.lexsort((-mean_scores, -votes))[:, :k]  # per row: most votes first, then highest mean score
    decisions = np.zeros(votes.shape, dtype=bool)
    np.put_along_axis(decisions, ranking, True, axis=1)
    return order, decisions


METRIC_MODULES = ("mood_tags", "valence_arousal")


def metric_module_path(name: str) -> Path:
    """The folder of a packaged `evaluate` module: its script, metric card, Space app and requirements."""
    if name not in METRIC_MODULES:
        raise ValueError(f"unknown metric module {name!r}; choose one of {', '.join(METRIC_MODULES)}")
    return Path(str(resources.files(__package__).joinpath("metric_modules", name)))


def metric_info(description: str, citation: str, inputs_description: str, **extra):
    """The `evaluate.MetricInfo` both packaged modules declare: per-track lists of scores (`predictions`) and of
    labels or ratings (`references`)."""
    import datasets
    import evaluate

    scores = datasets.Sequence(datasets.Value("float64"))
    return evaluate.MetricInfo(description=description, citation=citation, inputs_description=inputs_description,
                               features=datasets.Features({"predictions": scores, "references": scores}), **extra)


@cache
def load_metric(name: str):
    """`evaluate.load` of a packaged module from its folder (no Hub), kept in memory and loaded once per process."""
    try:
        import evaluate
    except ImportError as error:
        raise ImportError("the evaluate modules need `evaluate`: pip install evaluate (or, in this package's clone, "
                          "pip install -e '.[train]')") from error
    return evaluate.load(str(metric_module_path(name)), keep_in_memory=True)


def metric_demo(module):
    """The web page of a metric Space (its `app.py`): predictions and references as JSON lists of lists, the
    module's keyword arguments as a JSON object, the results as JSON."""
    import json

    import gradio as gr

    def compute(predictions: str, references: str, options: str) -> dict:
        try:
            return module.compute(predictions=json.loads(predictions), references=json.loads(references),
                                  **json.loads(options or "{}"))
        except (ValueError, TypeError) as error:  # malformed JSON or metric input: say so on the page
            raise gr.Error(str(error)) from error

    return gr.Interface(
        fn=compute,
        inputs=[gr.Textbox(label="predictions (JSON, one list per track)"),
                gr.Textbox(label="references (JSON, one list per track)"),
                gr.Textbox(label="options (JSON object of keyword arguments)", value="{}")],
        outputs=gr.JSON(label=module.name),
        title=f"Metric: {module.name}",
        description=module.info.description,
    )


def sigmoid(logits) -> np.ndarray:
    """Tag probabilities of a head's logits, in float64 (float32 rounds the confident ones to 1.0, tying them)."""
    return 1 / (1 + np.exp(-np.asarray(logits, dtype=np.float64)))


def task_metrics(task: Mapping, outputs, targets, top_k: int | None = None,
                 threshold: float | None = None) -> dict[str, float]:
    """One task's metrics from its head's outputs, by the `evaluate` modules: a multilabel task's AUCs (plus F1 of
    top-k or thresholded probabilities when asked) over the tracks it labels (a row of NaN: a track of another
    corpus, or one without tags); a regression task's R²/RMSE per label (RMSE also on [-1, 1] where the task has its
    `scale`)."""
    outputs, targets = np.asarray(outputs), np.asarray(targets, dtype=np.float64)
    if task["type"] == "multilabel":
        labelled = ~np.isnan(targets).any(axis=1)
        return load_metric("mood_tags").compute(predictions=sigmoid(outputs[labelled]), references=targets[labelled],
                                                top_k=top_k, threshold=threshold)
    return load_metric("valence_arousal").compute(predictions=outputs, references=targets, names=task["labels"],
                                                  scale=tuple(task["scale"]) if task.get("scale") else None)


def compute_metrics_for(
    task: Mapping, scale: RatingScale | None = None, top_k: int | None = None, threshold: float | None = None
):
    """A `compute_metrics` for `transformers.Trainer` on one task of a Music2Emo config: `task_metrics` of the
    evaluation's predictions (logits) and labels; `scale`, where given, the ratings' (else the task's own)."""
    if scale is not None:
        task = {**task, "scale": [scale.low, scale.high]}

    def compute_metrics(eval_pred) -> dict[str, float]:
        return task_metrics(task, eval_pred.predictions, eval_pred.label_ids, top_k, threshold)

    return compute_metrics


__all__ = [
    "compute_metrics_for",
    "f1_scores",
    "load_metric",
    "metric_demo",
    "metric_info",
    "metric_module_path",
    "regression_metrics",
    "sigmoid",
    "song_level",
    "song_vote_decisions",
    "tag_metrics",
    "task_metrics",
    "top_k_decisions",
]
