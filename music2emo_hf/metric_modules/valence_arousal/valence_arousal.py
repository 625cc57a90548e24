"""Valence/arousal metrics of music2emo-hf as an `evaluate` module: R² and RMSE per dimension on the corpus's own
rating scale, and RMSE on [-1, 1] when the scale is given."""

import evaluate
import numpy as np

from music2emo_hf.labels import RatingScale
from music2emo_hf.metrics import metric_info, regression_metrics

_DESCRIPTION = """Regression metrics of emotion ratings: `r2_<name>` and `rmse_<name>` for each dimension (valence and
arousal unless `names` says otherwise); with `scale=(low, high)` also `rmse_<name>_normalized`, the RMSE on [-1, 1]
(R² is the same on both scales). Tracks whose rating of a dimension is NaN are left out of that dimension."""

_INPUTS = """
Args:
    predictions: one [valence, arousal] pair per track (or one value per name in `names`).
    references: the ratings, same shape; NaN where a track has no rating of that dimension.
    names: the dimensions' names, default ("valence", "arousal").
    scale: (low, high) of the rating scale, e.g. (1, 9) for DEAM and EmoMusic, (0, 1) for PMEmo.
Returns:
    r2_valence, rmse_valence, r2_arousal, rmse_arousal (and rmse_*_normalized with a scale).
Example:
    >>> metric = evaluate.load("music2emo-hf/valence_arousal")  # or music2emo_hf.metrics.load_metric(...)
    >>> metric.compute(predictions=[[5, 3], [6, 4], [2, 2]], references=[[5, 3], [7, 4], [3, 1]], scale=(1, 9))
"""

_CITATION = """@article{aljanaki2017deam,
  title={Developing a benchmark for emotional analysis of music},
  author={Aljanaki, Anna and Yang, Yi-Hsuan and Soleymani, Mohammad},
  journal={PLoS ONE},
  volume={12},
  number={3},
  year={2017}
}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _INPUTS)
class ValenceArousal(evaluate.Metric):
    def _info(self):
        return metric_info(_DESCRIPTION, _CITATION, _INPUTS)

    def _compute(self, predictions, references, names=("valence", "arousal"), scale=None):
        rating_scale = None if scale is None else RatingScale(float(scale[0]), float(scale[1]))
        references = np.asarray(references, dtype=np.float64)
        return regression_metrics(references, np.asarray(predictions, dtype=np.float64), names=names, scale=rating_scale)
