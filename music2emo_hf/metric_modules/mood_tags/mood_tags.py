"""Mood-tag metrics of music2emo-hf as an `evaluate` module: ROC-AUC and PR-AUC, macro and micro, as the MediaEval
Emotion and Theme task scores them (checked against its organisers' golden file), and optionally macro/micro-F1 of
each track's top-k tags or of thresholded scores."""

import evaluate
import numpy as np

from music2emo_hf.metrics import f1_scores, metric_info, tag_metrics, top_k_decisions

_DESCRIPTION = """Multi-label tag metrics: `roc_auc_macro` (mean over tags that have both positive and negative tracks;
`tags_scored` says how many), `pr_auc_macro` (mean over tags that have a positive track), `roc_auc_micro`,
`pr_auc_micro` (all decisions pooled), equal to scikit-learn's wherever every tag has positive and negative
tracks (as in the MediaEval 2019-2021 Emotion and Theme task, whose evaluation script uses it)."""

_INPUTS = """
Args:
    predictions: one list of tag scores per track (probabilities or any monotone score), e.g. 56 for MTG-Jamendo.
    references: one list of 0/1 tag labels per track, of the same length.
    top_k: also report `top{k}_f1_macro` and `top{k}_f1_micro` of each track's k highest-scoring tags.
    threshold: also report `threshold_f1_macro` and `threshold_f1_micro` of the decisions `score >= threshold`.
Returns:
    roc_auc_macro, pr_auc_macro, roc_auc_micro, pr_auc_micro, tags_scored (and the F1s asked for).
Example:
    >>> metric = evaluate.load("music2emo-hf/mood_tags")  # or music2emo_hf.metrics.load_metric("mood_tags")
    >>> metric.compute(predictions=[[0.9, 0.2], [0.3, 0.8], [0.6, 0.1]], references=[[1, 0], [0, 1], [0, 0]])
"""

_CITATION = """@inproceedings{bogdanov2019mtg,
  title={The MTG-Jamendo Dataset for Automatic Music Tagging},
  author={Bogdanov, Dmitry and Won, Minz and Tovstogan, Philip and Porter, Alastair and Serra, Xavier},
  booktitle={Machine Learning for Music Discovery Workshop, ICML},
  year={2019}
}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _INPUTS)
class MoodTags(evaluate.Metric):
    def _info(self):
        return metric_info(_DESCRIPTION, _CITATION, _INPUTS,
                           reference_urls=["https://github.com/MTG/mtg-jamendo-dataset/blob/master/scripts/mediaeval/"
                                           "calculate_decisions.py"])

    def _compute(self, predictions, references, top_k=None, threshold=None):
        predictions, references = np.asarray(predictions, dtype=np.float64), np.asarray(references)
        out = tag_metrics(references, predictions)
        if top_k is not None:
            out |= {f"top{top_k}_{name}": value
                    for name, value in f1_scores(references, top_k_decisions(predictions, top_k)).items()}
        if threshold is not None:
            out |= {f"threshold_{name}": value for name, value in f1_scores(references, predictions >= threshold).items()}
        return out
