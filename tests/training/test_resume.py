"""Robust runs: a run killed with SIGKILL and restarted ends with the metrics of an uninterrupted run; two CPU ranks
train one model; a restart with other settings is refused."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import ROOT

from .conftest import TRAINING, cpu_env, load_script, run_quietly

import engine  # noqa: E402,I001  (training/, put on sys.path by conftest)

pytestmark = pytest.mark.slow  # runs training scripts as subprocesses

# The faithful recipe, briefly: max_size epochs of 12 steps, a checkpoint every 5 steps and at each epoch's end.
SETTINGS = ["lr=0.003", "max_epochs=5", "checkpoint_every=5", "keep_checkpoints=2"]


def command(synthetic, output: Path, *extra: str) -> list[str]:
    return [sys.executable, str(TRAINING / "distill.py"), "--config", "faithful", "--dataset", str(synthetic.data),
            "--model", str(synthetic.init), "--corpus", "mtg_jamendo", "deam", "--output-dir", str(output),
            "--set", *SETTINGS, *extra]


def finished(synthetic, output: Path, *extra: str) -> subprocess.CompletedProcess:
    done = subprocess.run(command(synthetic, output, *extra), cwd=ROOT, env=cpu_env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def distill_here(argv: list[str]) -> int:
    """distill.py's main, in this process (the runs that are not killed need no process of their own)."""
    return run_quietly(lambda a: engine.run_script(a, "", distill=True), argv)


def test_a_killed_run_resumes_to_the_metrics_of_an_uninterrupted_one(synthetic, tmp_path, capfd):
    assert distill_here(command(synthetic, tmp_path / "uninterrupted")[2:]) == 0

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(command(synthetic, interrupted), cwd=ROOT, env=cpu_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (interrupted / "checkpoints" / "step-00000015").is_dir():  # mid-epoch 1, after epoch 0 chose a best
        assert process.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (interrupted / "results.json").exists()

    resumed = finished(synthetic, interrupted)
    assert "resuming from" in resumed.stderr and "checkpoints/step-0000001" in resumed.stderr
    expected, got = (json.loads((folder / "results.json").read_text()) for folder in (tmp_path / "uninterrupted", interrupted))
    assert got == expected
    assert (interrupted / "history.jsonl").read_text() == (tmp_path / "uninterrupted" / "history.jsonl").read_text()
    for folder in ("best", "best-mtg_jamendo", "best-deam"):  # the faithful recipe exports the best per corpus too
        a, b = weights(tmp_path / "uninterrupted" / folder), weights(interrupted / folder)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), folder
    assert len(engine.checkpoints(interrupted)) == 2 and not list((interrupted / "checkpoints").glob("*.tmp"))

    capfd.readouterr()
    assert distill_here(command(synthetic, interrupted)[2:]) == 0  # a finished run, rerun: nothing more is trained
    assert json.loads((interrupted / "results.json").read_text()) == expected and "train loss" not in capfd.readouterr().err

    # Music2Emo's KD row: each corpus's own export scored on it alone, one row (they were refused as sharing corpora).
    table = tmp_path / "table"
    row = [f"--model=J+D (KD)={interrupted / f'best-{corpus}'}" for corpus in ("mtg_jamendo", "deam")]
    assert run_quietly(load_script("evaluate_models").main, ["--dataset", str(synthetic.data), *row,
                                                             "--output", str(table)]) == 0
    scored = json.loads(table.with_suffix(".json").read_text())["rows"]
    assert [row["label"] for row in scored] == ["J+D (KD)"]
    for corpus in ("mtg_jamendo", "deam"):  # the figures of results.json (its loss is the recipe's, weighted)
        run_scores = {name: value for name, value in expected[f"best-{corpus}"]["test"][corpus].items() if name != "loss"}
        assert {name: scored[0]["metrics"][corpus][name] for name in run_scores} == pytest.approx(run_scores, abs=1e-6)


def test_restarting_with_other_settings_is_refused(synthetic, tmp_path, capsys):
    output = tmp_path / "run"
    assert distill_here(command(synthetic, output, "max_epochs=1")[2:]) == 0
    capsys.readouterr()
    assert distill_here(command(synthetic, output, "max_epochs=2")[2:]) == 2
    assert f"--output-dir {output} holds a run with other settings (recipe.max_epochs: 1 in the run, 2 now)" in capsys.readouterr().err
    (output / "run.json").unlink()  # a folder of something else: a model folder, the user's notes
    written = {path: path.read_bytes() for path in output.rglob("*") if path.is_file()}
    assert distill_here(command(synthetic, output, "max_epochs=1")[2:]) == 2
    assert f"--output-dir {output} holds files but no run.json" in capsys.readouterr().err
    assert {path: path.read_bytes() for path in output.rglob("*") if path.is_file()} == written
    (tmp_path / "notes.txt").write_text("mine")
    assert distill_here(command(synthetic, tmp_path / "notes.txt", "max_epochs=1")[2:]) == 2
    assert (f"error: --output-dir {tmp_path / 'notes.txt'}: it is a file; name a folder for the run"
            in capsys.readouterr().err) and (tmp_path / "notes.txt").read_text() == "mine"


def test_other_labels_for_the_same_tracks_make_another_run(synthetic):
    """Corpora prepared again with corrected labels (same ids, same splits) are not resumed onto."""
    model, _ = engine.build_model(synthetic.init, ["deam"])
    corpora = engine.load_corpora(synthetic.data, synthetic.features, ["deam"], model)
    recipe, accelerator = engine.Recipe.load("faithful"), engine.make_accelerator()
    before = engine.run_settings({}, recipe, corpora, accelerator)
    corpora[0].splits["test"].targets[0, 0] += 1.0
    after = engine.run_settings({}, recipe, corpora, accelerator)
    assert before["tracks"] == after["tracks"] and before["targets"] != after["targets"]
    assert engine.setting_changes(before, after) == ["targets.deam.test: other data than the run's"]


def _distill_as_one_of_two_ranks(argv: str) -> None:
    from accelerate import PartialState

    assert engine.run_script(json.loads(argv), "", distill=True) == 0
    assert PartialState().num_processes == 2


def test_two_cpu_ranks_train_one_model(synthetic, tmp_path):
    output = tmp_path / "two-ranks"
    argv = ["--config", "improved", "--dataset", str(synthetic.data), "--model", str(synthetic.init), "--corpus",
            "mtg_jamendo", "deam", "--output-dir", str(output), "--set", "lr=0.003", "max_epochs=2",
            "checkpoint_every=3", "keep_checkpoints=4"]

    def launch(argv: list[str]) -> None:
        # Ranks are forked from a fresh interpreter: forked from this one, whose torch has run multi-threaded, they hang.
        launcher = (
            "import sys, accelerate; sys.path.insert(0, sys.argv[1]); "
            "from tests.training.test_resume import _distill_as_one_of_two_ranks as run; "
            "accelerate.debug_launcher(run, args=(sys.argv[2],), num_processes=2)"
        )
        done = subprocess.run([sys.executable, "-c", launcher, str(TRAINING), json.dumps(argv)], cwd=ROOT,
                              env=cpu_env(), capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]

    launch(argv)
    history = [json.loads(line) for line in (output / "history.jsonl").read_text().splitlines()]
    # 8 tracks per corpus per rank: 96 MTG tracks in 6 global batches of 16, DEAM's 95 cycled alongside.
    assert [record["step"] for record in history] == [6, 12]
    results = json.loads((output / "results.json").read_text())["best"]["test"]
    assert set(results) == {"mtg_jamendo", "deam"}
    # best/ is a whole model; checkpoints leave out the idle backbone (training read the feature cache).
    best, state = weights(output / "best"), weights(engine.checkpoints(output)[-1])
    assert any(k.startswith("backbone.") for k in best) and not any(k.startswith("backbone.") for k in state)

    # What a kill at step 4 leaves (the run's settings and its mid-epoch checkpoint, as both ranks wrote it),
    # resumed: the same history as the run that went on. From a review: one process saves the trainer's state, and
    # the other resumed with that one's losses of the epoch so far, so the epoch's train_loss differed.
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copy(output / "run.json", resumed / "run.json")
    shutil.copytree(output / "checkpoints" / "step-00000003", resumed / "checkpoints" / "step-00000003")
    launch([*argv[: argv.index("--output-dir") + 1], str(resumed), *argv[argv.index("--output-dir") + 2 :]])
    assert (resumed / "history.jsonl").read_text() == (output / "history.jsonl").read_text()
