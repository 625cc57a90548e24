"""Proof that training learns, on audio whose labels are functions of it (tests/synthetic.py), through the whole
chain: teachers recover the planted functions, `accelerate launch training/distill.py` moves a student towards its
teachers, evaluate_models.py writes the table in one command, and the student answers from audio in the pipeline."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import transformers

import music2emo_hf  # noqa: F401  (registers the task)
from music2emo_hf.cli import main as music2emo
from tests.conftest import ROOT
from tests.synthetic import RATE, Traits, synthesize

from .conftest import FAST, TRAINING, cpu_env, load_script, run_quietly

import engine  # noqa: E402  (training/, put on sys.path by conftest)

evaluate_models = load_script("evaluate_models")

pytestmark = pytest.mark.slow  # trains teachers and students


def common(synthetic, output: Path) -> list[str]:
    return ["--dataset", str(synthetic.data), "--model", str(synthetic.init), "--output-dir", str(output)]


@pytest.fixture(scope="module")
def teachers(synthetic, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("teachers")
    for corpus in ("mtg_jamendo", "deam"):
        argv = ["--config", "improved", "--corpus", corpus, *common(synthetic, out / corpus), "--set", *FAST]
        assert run_quietly(lambda a: engine.run_script(a, "", distill=False), argv) == 0
    return {corpus: out / corpus / "best" for corpus in ("mtg_jamendo", "deam")}


@pytest.fixture(scope="module")
def students(synthetic, teachers, tmp_path_factory) -> dict[str, Path]:
    """The same student twice: distilled from the teachers through a real `accelerate launch`, and without them."""
    out = tmp_path_factory.mktemp("students")
    corpora = ["--corpus", "mtg_jamendo", "deam"]
    taught = [f"--teacher={corpus}={path}" for corpus, path in teachers.items()]
    launch = [str(Path(sys.executable).parent / "accelerate"), "launch", "--cpu", "--num_processes", "1",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(TRAINING / "distill.py")]
    done = subprocess.run(
        [*launch, "--config", "improved", *corpora, *taught, *common(synthetic, out / "kd"), "--set", *FAST],
        cwd=ROOT, env=cpu_env(), capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "mtg_jamendo test: ROC-AUC" in done.stdout and f"model: {out / 'kd' / 'best'}" in done.stdout
    argv = ["--config", "improved", *corpora, *common(synthetic, out / "plain"), "--set", *FAST]
    assert run_quietly(lambda a: engine.run_script(a, "", distill=True), argv) == 0
    return {"kd": out / "kd" / "best", "plain": out / "plain" / "best"}


def test_teachers_learn_what_the_audio_determines(teachers):
    tags = json.loads((teachers["mtg_jamendo"] / "results.json").read_text())["best"]["test"]["mtg_jamendo"]
    assert tags["roc_auc_macro"] >= 0.9  # timbre -> tag
    va = json.loads((teachers["deam"] / "results.json").read_text())["best"]["test"]["deam"]
    assert va["r2_valence"] >= 0.8  # mode -> valence, seen by the harmony branch
    assert va["r2_arousal"] >= 0.8  # tempo and loudness -> arousal, seen by the backbone
    info = json.loads((teachers["deam"] / "training.json").read_text())
    assert info["corpora"] == ["deam"] and info["script"] == "train_teacher" and info["recipe"]["name"] == "improved"


def test_distillation_moves_the_student_towards_its_teachers_and_the_table_is_one_command(
    synthetic, teachers, students, tmp_path, capsys
):
    output = tmp_path / "table"
    argv = ["--dataset", str(synthetic.data), "--output", str(output),
            "--model", f"single={teachers['mtg_jamendo']}", "--model", f"single={teachers['deam']}",
            "--model", f"J+D={students['plain']}", "--model", f"J+D (KD)={students['kd']}",
            *[f"--teacher={corpus}={path}" for corpus, path in teachers.items()]]
    assert run_quietly(evaluate_models.main, argv) == 0
    table = output.with_suffix(".md").read_text()
    assert capsys.readouterr().out == table
    print(table)  # shown with `pytest -s`: the README's figures
    assert "| Training sets | MTG-Jamendo PR / ROC | DEAM R² V / A |" in table
    rows = {row["label"]: row for row in json.loads(output.with_suffix(".json").read_text())["rows"]}
    assert list(rows) == ["single", "J+D", "J+D (KD)"] and len(rows["single"]["models"]) == 2
    for row in rows.values():
        # chance is 0.5 and 0; J+D's tags reached 0.848-0.857 with one or two torch threads
        assert row["metrics"]["mtg_jamendo"]["roc_auc_macro"] >= 0.8 and row["metrics"]["deam"]["r2_valence"] >= 0.8
        tags, va = row["metrics"]["mtg_jamendo"], row["metrics"]["deam"]
        assert (f"| {row['label']} | {tags['pr_auc_macro']:.4f} / {tags['roc_auc_macro']:.4f} | "
                f"{va['r2_valence']:.4f} / {va['r2_arousal']:.4f} |") in table  # as the header names them
    for corpus in ("mtg_jamendo", "deam"):  # KL of tag probabilities, MSE of valence/arousal
        assert rows["single"]["teacher_distance"][corpus] == 0
        assert rows["J+D (KD)"]["teacher_distance"][corpus] < 0.7 * rows["J+D"]["teacher_distance"][corpus]


def test_the_tables_output_is_checked_before_any_model_is_scored(tmp_path, capsys):
    """A folder given as --output is refused at once, not after a long evaluation, and nothing is written in it."""
    with pytest.raises(SystemExit) as exit_:
        evaluate_models.main(["--zero-shot", f"all={tmp_path / 'none'}", "--output", str(tmp_path)])
    assert exit_.value.code == 2 and f"--output {tmp_path}: is a folder; name the tables' file in it, e.g. " \
        f"{tmp_path / 'table'}" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_the_distilled_student_answers_from_audio_in_the_pipeline(students):
    with warnings.catch_warnings():
        warnings.simplefilter("error", music2emo_hf.UntrainedModelWarning)  # a trained model must not warn
        pipe = transformers.pipeline("music-emotion", model=str(students["kd"]), device="cpu")
    rng = np.random.default_rng(7)
    answers = {}
    for minor in (False, True):
        traits = Traits(key=2, minor=minor, bpm=120.0, gain_db=-10.0, timbre="sine")
        answers[minor] = pipe({"array": synthesize(traits, rng), "sampling_rate": RATE})
    assert "warning" not in answers[False] and len(answers[False]["moods"]) == 56
    assert answers[False]["valence"] > 5 > answers[True]["valence"]  # major sounds happier than minor
    assert answers[False]["moods"][0]["label"] == answers[True]["moods"][0]["label"] == "soft"  # a sine's tag


def test_pseudo_labels_teach_a_head_whose_corpus_the_student_never_sees(synthetic, teachers, tmp_path):
    """A student trained on DEAM alone, with the MTG-Jamendo teacher's tag probabilities on DEAM's tracks as
    pseudo-labels (what Music2Emo computed and left unused), tags MTG-Jamendo's test tracks it never saw labels for.
    The teacher's config asks for tuples (`return_dict: false`, as a user's may): it is read by field all the same."""
    teacher = tmp_path / "teacher"
    shutil.copytree(teachers["mtg_jamendo"], teacher)
    config = json.loads((teacher / "config.json").read_text())
    (teacher / "config.json").write_text(json.dumps({**config, "return_dict": False}))
    output = tmp_path / "pseudo"
    argv = ["--config", "improved", "--corpus", "deam", *common(synthetic, output),
            f"--teacher=mtg_jamendo={teacher}", "--set", *FAST, "pseudo_label_weight=1.0"]
    assert run_quietly(lambda a: engine.run_script(a, "", distill=True), argv) == 0
    student = engine.Music2EmoModel.from_pretrained(output / "best")
    assert [task["name"] for task in student.config.tasks] == ["valence_arousal", "moods"]
    tags = engine.load_corpora(synthetic.data, synthetic.features, ["mtg_jamendo"], student, splits=["test"])[0]
    outputs = engine.predict(student, tags.splits["test"], tags.task, engine.make_accelerator(), 16)
    auc = engine.corpus_metrics(tags.task, tags.splits["test"].targets, outputs)["roc_auc_macro"]
    assert auc >= 0.7, auc  # chance: 0.5; labels learnt from DEAM's tracks alone, so below the teacher's 0.9+
    without = ["--config", "improved", "--corpus", "deam", *common(synthetic, tmp_path / "no"),
               f"--teacher=mtg_jamendo={teachers['mtg_jamendo']}"]
    assert run_quietly(lambda a: engine.run_script(a, "", distill=True), without) == 2  # says to set the weight


def test_a_model_is_refused_as_teacher_or_in_a_table_on_tracks_it_learnt_from(synthetic, teachers, tmp_path, capsys):
    """From a review: DEAM split again in the same folder (`prepare-data --seed 1`) made some of the DEAM teacher's
    training tracks test tracks, and both distillation and the table took it without a word (inflated scores). A
    saved model lists the tracks it learnt from; both refuse it on them."""
    learnt = json.loads((teachers["deam"] / "train_tracks.json").read_text())
    shards = sorted((synthetic.data / "data" / "deam").glob("train-*.parquet"))
    assert learnt == {"deam": [track for shard in shards for track in pq.read_table(shard)["track_id"].to_pylist()]}
    data = tmp_path / "data"
    shutil.copytree(synthetic.data, data)
    assert run_quietly(music2emo, ["prepare-data", "--corpus", "deam", "--source", str(synthetic.root / "downloads" /
                                   "deam"), "--out", str(data), "--fractions", "train=0.6,validation=0.2,test=0.2",
                                   "--seed", "1"]) == 0
    capsys.readouterr()
    argv = ["--config", "improved", "--corpus", "deam", "--dataset", str(data), "--model", str(synthetic.init),
            "--output-dir", str(tmp_path / "student"), f"--teacher=deam={teachers['deam']}"]
    assert run_quietly(lambda a: engine.run_script(a, "", distill=True), argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --teacher deam: it learnt from ")
    assert f"of the 32 deam tracks of the test split of {data} (e.g. " in err
    assert "so the student's test scores would not be fair. Train it on this dataset folder's splits." in err
    table = ["--dataset", str(data), "--model", f"single={teachers['deam']}", "--output", str(tmp_path / "table")]
    assert run_quietly(evaluate_models.main, table) == 2
    assert f"error: --model single={teachers['deam']}: it learnt from" in capsys.readouterr().err
    assert not (tmp_path / "table.md").exists()
    # Nor is it a model to train on from there (a second review), and what it learnt stays in the record of a model
    # trained on from it where its splits are the dataset's own.
    again = ["--config", "improved", "--corpus", "deam", "--dataset", str(data), "--model", str(teachers["deam"]),
             "--output-dir", str(tmp_path / "again")]
    assert run_quietly(lambda a: engine.run_script(a, "", distill=False), again) == 2
    assert capsys.readouterr().err.startswith("error: --model: it learnt from ")
    onwards = ["--config", "improved", "--corpus", "mtg_jamendo", "--dataset", str(synthetic.data), "--model",
               str(teachers["deam"]), "--output-dir", str(tmp_path / "onwards"), "--set", "max_epochs=1"]
    assert run_quietly(lambda a: engine.run_script(a, "", distill=False), onwards) == 0
    record = json.loads((tmp_path / "onwards" / "best" / "train_tracks.json").read_text())
    assert record["deam"] == learnt["deam"] and len(record["mtg_jamendo"]) > 0


def test_a_models_predictions_from_audio_score_in_the_table_as_the_model_does_from_the_cache(synthetic, teachers,
                                                                                            tmp_path, capsys):
    """The way into the table for a model the feature cache cannot score (a released checkpoint, with the authors'
    chord path): its predictions from `music2emo predict --dataset` on a corpus's test split. A teacher scored both
    ways gets the same figures (its audio decoded and its chords heard again by the pipeline)."""
    argv = ["--dataset", str(synthetic.data)]
    for corpus in ("mtg_jamendo", "deam"):
        assert run_quietly(music2emo, ["predict", "--dataset", str(synthetic.data), "--config", corpus, "--split",
                                       "test", "--model", str(teachers[corpus]), "--harmony-ensemble", "1",
                                       "--output-dataset", str(tmp_path / corpus)]) == 0  # chords as cached
        argv += ["--model", f"cache={teachers[corpus]}", "--predictions", f"audio={tmp_path / corpus}"]
    assert run_quietly(evaluate_models.main, [*argv, "--output", str(tmp_path / "table")]) == 0
    rows = {row["label"]: row for row in json.loads((tmp_path / "table.json").read_text())["rows"]}
    for corpus, figures in rows["cache"]["metrics"].items():
        scored = {name: value for name, value in figures.items() if name != "loss"}  # from logits vs probabilities
        assert {name: rows["audio"]["metrics"][corpus][name] for name in scored} == pytest.approx(scored, abs=2e-3)
    assert rows["audio"]["models"] == [str(tmp_path / "mtg_jamendo"), str(tmp_path / "deam")]
    capsys.readouterr()
    assert run_quietly(evaluate_models.main, ["--dataset", str(synthetic.data), "--split", "validation",
                                              "--predictions", f"audio={tmp_path / 'deam'}",
                                              "--output", str(tmp_path / "other")]) == 2
    assert "it holds predictions of the test split, not validation; predict with --split validation" in \
        capsys.readouterr().err
    assert run_quietly(evaluate_models.main, ["--dataset", str(synthetic.data), "--predictions",  # a training run's
                                              f"audio={teachers['deam']}", "--output", str(tmp_path / "third")]) == 2
    assert (f"--predictions {teachers['deam']}: not a `music2emo predict --dataset` output folder (its README.md does "
            "not say it was made so)") in capsys.readouterr().err


def test_a_trained_model_is_published_with_a_card_of_its_real_results(synthetic, teachers, tmp_path, fake_hub):
    from huggingface_hub import ModelCard

    teacher = teachers["deam"]
    results = json.loads((teacher / "results.json").read_text())["best"]["test"]["deam"]
    assert run_quietly(music2emo, ["push", str(teacher), "someone/deam-teacher", "--private"]) == 0
    assert fake_hub.calls[-1] == ("upload_folder", "someone/deam-teacher", "model")
    card = ModelCard.load(fake_hub.remote / "README.md")
    reported = {(r.dataset_type, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert reported[("deam", "R² valence")] == round(results["r2_valence"], 6)
    assert reported[("deam", "R² arousal")] == round(results["r2_arousal"], 6)
    assert "Trained with `training/train_teacher.py`, recipe `improved`" in card.text and "on deam" in card.text

    # evaluate_models.py's JSON for the model alone gives the same card numbers.
    output = tmp_path / "deam-alone"
    argv = ["--dataset", str(synthetic.data), "--model", f"teacher={teacher}", "--output", str(output)]
    assert run_quietly(evaluate_models.main, argv) == 0
    assert run_quietly(music2emo, ["card", str(teacher), "someone/deam-teacher", "--results", str(output) + ".json"]) == 0
    again = ModelCard.load(teacher / "README.md")
    assert {(r.dataset_type, r.metric_name): r.metric_value for r in again.data.eval_results} == reported
