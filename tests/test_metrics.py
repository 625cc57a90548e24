"""Metrics: the MediaEval golden values to 1e-6, and hand-checkable cases of the others."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from music2emo_hf.labels import VA_SCALE, RatingScale
from music2emo_hf.metrics import (
    METRIC_MODULES,
    compute_metrics_for,
    f1_scores,
    load_metric,
    metric_demo,
    metric_module_path,
    regression_metrics,
    song_level,
    song_vote_decisions,
    tag_metrics,
    top_k_decisions,
)
from tests.conftest import require_fixtures

GOLDEN = {"roc_auc_macro": 0.725821, "pr_auc_macro": 0.107734, "roc_auc_micro": 0.775029, "pr_auc_micro": 0.140913}


def test_reproduces_the_mediaeval_golden_file():
    folder = require_fixtures("mtg_jamendo", "results", "mediaeval")
    truth = np.load(folder / "groundtruth.npy")
    scores = np.load(folder / "baseline_vggish_predictions.npy")
    published = dict(line.split("\t") for line in (folder / "baseline_vggish_results.tsv").read_text().split("\n") if line)
    for ours in (tag_metrics(truth, scores), load_metric("mood_tags").compute(predictions=scores, references=truth)):
        for name, value in GOLDEN.items():
            assert ours[name] == pytest.approx(value, abs=1e-6)
            key = {"roc_auc": "ROC-AUC", "pr_auc": "PR-AUC"}[name.rsplit("_", 1)[0]] + "-" + name.rsplit("_", 1)[1]
            assert ours[name] == pytest.approx(float(published[key]), abs=1e-6)
        assert ours["tags_scored"] == 56


@pytest.mark.slow
def test_the_evaluate_modules_load_offline_and_are_ready_to_publish(tmp_path):
    """Each module loads from the installed package with the Hub unreachable, and its folder is a metric Space:
    the script named as the folder, a card tagged for `evaluate`, the page and its requirements."""
    code = ("from music2emo_hf.metrics import load_metric; import json; print(json.dumps(load_metric('valence_arousal')"
            ".compute(predictions=[[5, 3], [6, 1], [4, 5], [5, 7]], references=[[5, 3], [7, float('nan')], [3, 5], "
            "[5, 7]], scale=(1, 9))))")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["rmse_valence"] == pytest.approx(np.sqrt(2 / 4)) and out["r2_valence"] == pytest.approx(1 - 2 / 8)
    assert out["rmse_valence_normalized"] == pytest.approx(np.sqrt(2 / 4) / 4) and out["r2_arousal"] == 1.0
    for name in METRIC_MODULES:
        folder = metric_module_path(name)
        assert {"README.md", "app.py", "requirements.txt", f"{name}.py"} <= {p.name for p in folder.iterdir()}
        card = (folder / "README.md").read_text()
        assert card.startswith("---\n") and "- evaluate\n- metric\n" in card and "app_file: app.py" in card
    with pytest.raises(ValueError, match="unknown metric module 'accuracy'"):
        metric_module_path("accuracy")


def test_the_metric_page_computes_and_explains_bad_input():
    import gradio as gr

    demo = metric_demo(load_metric("mood_tags"))
    compute = demo.fns[0].fn
    out = compute("[[0.9, 0.1], [0.2, 0.8], [0.6, 0.3]]", "[[1, 0], [0, 1], [0, 0]]", '{"top_k": 1}')
    assert out["roc_auc_macro"] == 1.0 and out["top1_f1_macro"] == pytest.approx((2 / 3 + 1) / 2)
    with pytest.raises(gr.Error, match="one shape"):
        compute("[[0.9, 0.1]]", "[[1, 0, 1]]", "{}")


def test_tag_aucs_equal_scikit_learns_with_ties_and_rare_tags():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(0)
    truth = rng.random((300, 20)) > np.linspace(0.5, 0.99, 20)  # common to rare tags
    truth[:2, -1], truth[2:, -1] = True, False  # a tag with two positives
    scores = np.round(rng.random((300, 20)) + 0.3 * truth, 1)  # informative, and full of ties
    ours = tag_metrics(truth, scores)
    assert ours["roc_auc_macro"] == pytest.approx(roc_auc_score(truth, scores, average="macro"), abs=1e-12)
    assert ours["pr_auc_macro"] == pytest.approx(average_precision_score(truth, scores, average="macro"), abs=1e-12)
    assert ours["roc_auc_micro"] == pytest.approx(roc_auc_score(truth, scores, average="micro"), abs=1e-12)
    assert ours["pr_auc_micro"] == pytest.approx(average_precision_score(truth, scores, average="micro"), abs=1e-12)
    assert 0.55 < ours["roc_auc_macro"] < 0.95  # a case where the values mean something


def test_tags_without_positives_are_left_out_of_macro_and_bad_shapes_refused():
    truth = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.5], [0.7, 0.6, 0.5], [0.1, 0.3, 0.5]])
    out = tag_metrics(truth, scores)
    assert out["tags_scored"] == 2 and out["roc_auc_macro"] == 1.0
    with pytest.raises(ValueError, match="one shape"):
        tag_metrics(truth, scores[:, :2])
    with pytest.raises(ValueError, match="NaN"):
        tag_metrics(truth, np.full(truth.shape, np.nan))
    for odd in (np.nan, 0.05):  # scikit-learn refuses these too; cast to bool they counted as positives
        references = truth.astype(float)
        references[3, 0] = odd
        with pytest.raises(ValueError, match="tag references must be 0 or 1"):
            tag_metrics(references, scores)
    assert tag_metrics(truth.astype(bool), scores) == out == tag_metrics(truth.astype(float), scores)


def test_a_tag_every_track_has_counts_in_pr_auc_with_ap_1():
    """Average precision is defined (1) where all tracks are positive, unlike ROC-AUC: scikit-learn and torchmetrics
    count it, and so does the macro PR-AUC (it left it out, giving 0.40 where they give 0.45)."""
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(1)
    truth = rng.random((20, 4)) < 0.4
    truth[:, 2], truth[:, 3] = True, False  # every track; none
    scores = rng.random((20, 4))
    out = tag_metrics(truth, scores)
    assert out["tags_scored"] == 2  # ROC-AUC: the two tags with both kinds of track
    assert out["pr_auc_macro"] == pytest.approx(average_precision_score(truth[:, :3], scores[:, :3], average="macro"))
    assert out["pr_auc_macro"] == pytest.approx((sum(average_precision_score(truth[:, i], scores[:, i])
                                                     for i in range(2)) + 1) / 3)


def test_top_k_and_f1():
    scores = np.array([[0.9, 0.5, 0.1], [0.2, 0.3, 0.8]])
    assert top_k_decisions(scores, 2).tolist() == [[True, True, False], [False, True, True]]
    truth = np.array([[1, 0, 0], [0, 0, 1]])
    out = f1_scores(truth, top_k_decisions(scores, 1))
    assert out == {"f1_macro": pytest.approx(2 / 3), "f1_micro": 1.0}
    with pytest.raises(ValueError, match="k must be"):
        top_k_decisions(scores, 4)
    with pytest.raises(ValueError, match="NaN"):  # it took the NaN tag as the best
        top_k_decisions([[np.nan, 0.2, 0.1]], 1)
    with pytest.raises(ValueError, match="tag references must be 0 or 1"):  # a NaN truth counted as a positive
        f1_scores([[np.nan, 0], [0, 1]], [[True, False], [False, True]])


def test_regression_on_both_scales_and_nan_targets_skipped():
    truth = np.array([[5.0, 3.0], [7.0, np.nan], [3.0, 5.0], [5.0, 7.0]])
    pred = np.array([[5.0, 3.0], [6.0, 1.0], [4.0, 5.0], [5.0, 7.0]])
    out = regression_metrics(truth, pred, scale=VA_SCALE)
    assert out["rmse_valence"] == pytest.approx(np.sqrt(2 / 4))
    assert out["rmse_valence_normalized"] == pytest.approx(np.sqrt(2 / 4) / 4)
    assert out["r2_valence"] == pytest.approx(1 - 2 / 8)
    assert out["r2_arousal"] == 1.0 and out["rmse_arousal"] == 0.0
    one = regression_metrics(truth[:, :1], pred[:, :1], names="valence")  # one name, not seven letters
    assert one == {"r2_valence": out["r2_valence"], "rmse_valence": out["rmse_valence"]}
    for low, high in ((9, 1), (1, 1)):  # the map onto [-1, 1] would flip the errors' sign, or divide by zero
        with pytest.raises(ValueError, match=f"runs from low to high, got low={low}, high={high}"):
            RatingScale(low, high)


def test_song_level_voting_averages_segments_per_track():
    tracks, scores = song_level([[0.2, 0.4], [0.4, 0.0], [1.0, 1.0]], ["a", "a", "b"])
    assert tracks == ["a", "b"]
    np.testing.assert_allclose(scores, [[0.3, 0.2], [1.0, 1.0]])


def test_song_vote_takes_the_most_voted_labels_and_breaks_ties_by_mean_score():
    scores = [[0.9, 0.8, 0.1], [0.2, 0.7, 0.6], [0.1, 0.2, 0.9]]  # song a: one vote each for labels 0 and 1
    tracks, decisions = song_vote_decisions(scores, ["a", "a", "b"], k=1)
    assert tracks == ["a", "b"]
    np.testing.assert_array_equal(decisions, [[False, True, False], [False, False, True]])  # a: mean 0.75 beats 0.55


def test_compute_metrics_for_the_trainer():
    moods = compute_metrics_for({"type": "multilabel", "labels": ["x", "y"]}, top_k=1, threshold=0.5)
    out = moods(SimpleNamespace(predictions=np.array([[3.0, -3.0], [-3.0, 3.0], [2.0, 1.0]]),
                                label_ids=np.array([[1, 0], [0, 1], [1, 0]])))
    assert out["roc_auc_macro"] == 1.0 and out["top1_f1_macro"] == 1.0 and out["threshold_f1_micro"] < 1.0
    # The threshold applies to probabilities, not logits; a row without tags (NaN: unlabelled) is not scored.
    near_zero = moods(SimpleNamespace(predictions=np.array([[0.2, -3.0], [-3.0, 3.0], [-0.2, 0.3], [5.0, 5.0]]),
                                      label_ids=np.array([[1, 0], [0, 1], [0, 1], [np.nan, np.nan]])))
    assert near_zero["threshold_f1_micro"] == 1.0 and near_zero["roc_auc_macro"] == 1.0
    va = compute_metrics_for({"type": "regression", "labels": ["valence", "arousal"]}, scale=VA_SCALE)
    out = va(SimpleNamespace(predictions=np.array([[5.0, 5.0], [6.0, 4.0]]), label_ids=np.array([[5.0, 5.0], [6.0, 4.0]])))
    assert out["r2_valence"] == 1.0 and out["rmse_arousal_normalized"] == 0.0
