"""training/extract_features.py: a prepared dataset folder -> one safetensors file per track that gives the model's
own answers; resumable to identical files, sharded over processes, reporting bad files without stopping."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch
from accelerate import PartialState
from safetensors import safe_open

from music2emo_hf import Music2EmoFeatureExtractor, Music2EmoModel
from music2emo_hf.audio import load_audio
from music2emo_hf.data.features import MANIFEST, feature_path, load_track_features, read_manifest
from music2emo_hf.harmony import HarmonyAnalyzer

from .conftest import ROOT, tone

_spec = importlib.util.spec_from_file_location("extract_features", ROOT / "training" / "extract_features.py")
extract_features = sys.modules[_spec.name] = importlib.util.module_from_spec(_spec)  # dataclasses look it up
_spec.loader.exec_module(extract_features)

# corpus -> (track_id, audio relative to the corpus download, seconds, Hz); None: the row has no audio file.
TRACKS = {
    "deam": [("10", "clips/10.wav", 12.0, 220.0), ("2", "clips/2.wav", 1.5, 330.0)],
    "emotify": [("classical/1", "classical/1.wav", 2.0, 262.0), ("rock/101", None, 0.0, 0.0)],
}
WITH_AUDIO = ["deam/10.safetensors", "deam/2.safetensors", "emotify/classical/1.safetensors"]


def make_dataset(root: Path, tracks: dict[str, list[tuple]]) -> Path:
    """A prepared dataset folder in `layout.py`'s shape: Parquet rows per corpus, audio in per-corpus downloads
    named by sources.json."""
    out = root / "prepared"
    sources = {}
    for corpus, rows in tracks.items():
        download = root / "downloads" / corpus
        for _, audio, seconds, freq in rows:
            if audio is not None and seconds:
                (download / audio).parent.mkdir(parents=True, exist_ok=True)
                sf.write(download / audio, tone(seconds, 24000, freq), 24000)
        sources[corpus] = str(download)
        table = pa.table(
            {
                "track_id": [track_id for track_id, *_ in rows],
                "corpus": [corpus] * len(rows),
                "split": ["train"] * len(rows),
                "audio": [audio for _, audio, *_ in rows],
            }
        )
        (out / "data" / corpus).mkdir(parents=True)
        pq.write_table(table, out / "data" / corpus / "train-00000-of-00001.parquet")
    (out / "sources.json").write_text(json.dumps(sources))
    return out


def run(dataset: Path, model: Path, name: str, *extra: str) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny model is untrained, and says so
        return extract_features.main(["--dataset", str(dataset), "--model", str(model), "--name", name, *extra])


def cached_files(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*.safetensors"))}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("extract"), TRACKS)


@pytest.fixture(scope="module")
def reference(dataset, tiny_model_dir) -> dict[str, bytes]:
    """The files of one uninterrupted single-process run."""
    assert run(dataset, tiny_model_dir, "reference") == 0
    return cached_files(dataset / "features" / "reference")


def test_every_track_with_audio_gets_features_that_give_the_models_answers(dataset, tiny_model_dir, reference):
    assert sorted(reference) == WITH_AUDIO
    cache = dataset / "features" / "reference"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Music2EmoModel.from_pretrained(tiny_model_dir).eval()
    config, hidden = model.config, model.config.backbone_config.hidden_size
    manifest = read_manifest(cache)
    assert manifest["model"] == str(tiny_model_dir.resolve()) and manifest["layers"] == config.pooled_layers
    assert (manifest["hidden_size"], manifest["chunk_seconds"], manifest["dtype"]) == (hidden, 10.0, "float32")
    with safe_open(feature_path(cache, "deam", "10"), framework="pt") as file:
        assert file.metadata()["track_id"] == "10" and file.metadata()["corpus"] == "deam"
        assert file.get_tensor("layer_embeddings").shape == (2, len(config.pooled_layers), hidden)

    cached = load_track_features(cache, "deam", "10")
    assert cached["chunk_embeddings"].shape == (2, config.embedding_dim)
    torch.testing.assert_close(cached["chunk_durations"], torch.tensor([10.0, 2.0]))
    assert cached["chord_root_ids"].shape == cached["chord_mask"].shape == (config.max_chords,)

    extractor = Music2EmoFeatureExtractor(config.sampling_rate, config.chunk_seconds)
    path = dataset.parent / "downloads" / "deam" / "clips" / "10.wav"
    harmony = HarmonyAnalyzer(window_seconds=config.chunk_seconds)(load_audio(path, config.sampling_rate), config.sampling_rate)
    chords = model.harmony_inputs([harmony])
    with torch.no_grad():
        from_audio = model(**extractor(str(path), return_tensors="pt"), **chords)
        from_cache = model(**{key: value[None] for key, value in cached.items()})
    for key, value in chords.items():
        assert torch.equal(cached[key], value[0]), key
    torch.testing.assert_close(from_cache.chunk_embeddings, from_audio.chunk_embeddings, atol=1e-5, rtol=1e-5)
    for name in ("moods", "valence_arousal"):
        got = from_cache.logits.get(name, from_cache.regression.get(name))
        want = from_audio.logits.get(name, from_audio.regression.get(name))
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)

    last_layer = load_track_features(cache, "deam", "10", layers=[config.pooled_layers[-1]])
    torch.testing.assert_close(last_layer["chunk_embeddings"], cached["chunk_embeddings"][:, hidden:])
    backwards = load_track_features(cache, "deam", "10", layers=config.pooled_layers[::-1])  # in the order asked
    torch.testing.assert_close(backwards["chunk_embeddings"],
                               torch.cat([cached["chunk_embeddings"][:, hidden:], cached["chunk_embeddings"][:, :hidden]],
                                         dim=1))
    with pytest.raises(KeyError, match=r"layers \[0\] are not in the feature cache"):
        load_track_features(cache, "deam", "10", layers=[0])


def test_an_interrupted_run_resumes_to_identical_files(dataset, tiny_model_dir, reference, capsys):
    cache = dataset / "features" / "resumed"
    assert run(dataset, tiny_model_dir, "resumed", "--corpus", "deam") == 0  # the run got through deam only...
    (cache / "deam" / "2.safetensors").unlink()  # ...was killed before this file...
    (cache / "deam" / "2.safetensors.tmp").write_bytes(b"half a file")  # ...while writing it
    capsys.readouterr()
    assert run(dataset, tiny_model_dir, "resumed") == 0
    assert "2 written, 1 skipped (already done), 0 failed" in capsys.readouterr().out
    assert cached_files(cache) == reference
    assert not list(cache.rglob("*.tmp"))

    assert run(dataset, tiny_model_dir, "resumed") == 0
    assert "0 written, 3 skipped (already done), 0 failed" in capsys.readouterr().out
    assert cached_files(cache) == reference


def test_a_bad_file_is_reported_and_the_others_are_written(tmp_path, tiny_model_dir, capsys):
    tracks = {"pmemo": [("1", "1.wav", 1.0, 220.0), ("2", "2.wav", 0.0, 0.0), ("3", "3.wav", 1.0, 440.0), ("4", "4.wav", 0.0, 0.0)]}
    dataset = make_dataset(tmp_path, tracks)
    (tmp_path / "downloads" / "pmemo" / "2.wav").write_text("this is not audio")  # and 4.wav is missing
    assert run(dataset, tiny_model_dir, "bad") == 1
    captured = capsys.readouterr()
    assert "2 written, 0 skipped (already done), 2 failed" in captured.out
    failures = [line for line in captured.err.splitlines() if line.startswith("failed: ")]
    assert len(failures) == 2 and "2.wav: not audio: it could not be decoded" in failures[0] and "4.wav: no such file" in failures[1]
    cache = dataset / "features" / "bad"
    assert sorted(cached_files(cache)) == ["pmemo/1.safetensors", "pmemo/3.safetensors"]
    errors = [json.loads(line) for line in (cache / "errors-rank0.jsonl").read_text().splitlines()]
    assert [(e["track_id"], e["audio"]) for e in errors] == [("2", str(tmp_path / "downloads/pmemo/2.wav")), ("4", str(tmp_path / "downloads/pmemo/4.wav"))]


def test_embeddings_float16_cannot_hold_are_a_failed_track_not_a_file_training_refuses(tmp_path, tiny_model_dir,
                                                                                       capsys):
    """From a review: features that were not finite were written, training refused them, and each rerun wrote them
    again. Here a model whose last layer's outputs are about 1e6, stored as float16 (at most 65504)."""
    from music2emo_hf import Music2EmoModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Music2EmoModel.from_pretrained(tiny_model_dir)
    norm = model.backbone.encoder.layers[-1].final_layer_norm
    with torch.no_grad():
        norm.weight.mul_(1e6)
        norm.bias.fill_(1e6)
    model.save_pretrained(tmp_path / "loud-model")
    dataset = make_dataset(tmp_path, {"pmemo": [("1", "1.wav", 1.0, 220.0)]})
    assert run(dataset, tmp_path / "loud-model", "half", "--dtype", "float16") == 1
    assert ("1.wav: the model's embeddings of it are not finite (NaN or infinity, or beyond float16's range), so its "
            "features are not written.") in capsys.readouterr().err
    assert cached_files(dataset / "features" / "half") == {}


def test_a_dataset_without_the_record_of_its_downloads_says_how_to_make_it(tmp_path, tiny_model_dir, capsys):
    """A prepared folder fetched from the Hub lacks sources.json (it is never published): its rows' audio paths
    cannot be joined to anything on this machine."""
    dataset = make_dataset(tmp_path, {"pmemo": [("1", "1.wav", 1.0, 220.0)]})
    (dataset / "sources.json").unlink()
    assert run(dataset, tiny_model_dir, "unrecorded") == 2
    assert (f"error: {dataset}: no download folder recorded for corpus 'pmemo' in sources.json; run `music2emo "
            f"prepare-data --corpus pmemo --source DIR --out {dataset}` on this machine.") in capsys.readouterr().err


def test_a_name_that_would_leave_the_features_folder_or_a_model_not_there_is_refused(tmp_path, tiny_model_dir,
                                                                                      capsys):
    """`--name ../../escape` wrote the cache two folders above the dataset's features/."""
    dataset = make_dataset(tmp_path, {"pmemo": [("1", "1.wav", 1.0, 220.0)]})
    assert run(dataset, tiny_model_dir, "../../escape") == 2
    assert (f"error: --name '../../escape': a feature cache is one folder under {dataset / 'features'}; give a plain "
            "folder name (no '/').") in capsys.readouterr().err
    assert not (tmp_path / "escape").exists() and not (dataset.parent / "escape").exists()
    with pytest.raises(SystemExit):  # a folder that is not there: said so, not Hub id rules (a review)
        run(dataset, tmp_path / "no-model", "features")
    assert (f"argument --model: {tmp_path / 'no-model'}: there is no such folder; give a model folder (`music2emo "
            "init` makes one) or a Hub id") in capsys.readouterr().err


def test_a_rerun_extracts_again_what_changed_and_only_that(tmp_path, tiny_model_dir, capsys):
    tracks = {"pmemo": [("1", "1.wav", 1.0, 220.0), ("2", "2.wav", 1.0, 330.0), ("3", "3.wav", 1.0, 440.0)]}
    dataset = make_dataset(tmp_path, tracks)
    audio, cache = tmp_path / "downloads" / "pmemo", dataset / "features" / "cache"
    assert run(dataset, tiny_model_dir, "cache") == 0
    before = cached_files(cache)

    os.utime(audio / "1.wav", ns=(0, 0))  # copied without its times: same bytes, so nothing to redo
    sf.write(audio / "2.wav", tone(1.0, 24000, 550.0), 24000)  # replaced by another recording of the same size
    (cache / "pmemo" / "3.safetensors").write_bytes(b"damaged")
    capsys.readouterr()
    assert run(dataset, tiny_model_dir, "cache") == 0
    assert "2 written (2 again, replacing out-of-date features), 1 skipped (already done)" in capsys.readouterr().out
    after = cached_files(cache)
    assert after["pmemo/1.safetensors"] == before["pmemo/1.safetensors"]
    assert after["pmemo/3.safetensors"] == before["pmemo/3.safetensors"]
    assert after["pmemo/2.safetensors"] != before["pmemo/2.safetensors"]
    assert run(dataset, tiny_model_dir, "fresh") == 0
    assert cached_files(dataset / "features" / "fresh")["pmemo/2.safetensors"] == after["pmemo/2.safetensors"]

    (audio / "2.wav").write_text("now it is not audio")
    capsys.readouterr()
    assert run(dataset, tiny_model_dir, "cache") == 1
    captured = capsys.readouterr()
    assert "0 written, 2 skipped (already done), 1 failed" in captured.out
    assert "2.wav: not audio" in captured.err and "were removed" in captured.err
    assert not (cache / "pmemo" / "2.safetensors").exists()  # features of a recording that is gone mislead training


def test_a_cache_made_with_other_settings_is_refused(dataset, tiny_model_dir, reference, capsys, tmp_path):
    before = (dataset / "features" / "reference" / MANIFEST).read_text()
    shutil.copytree(tiny_model_dir, tmp_path / "copy")  # the same model elsewhere makes the same numbers (a review)
    assert run(dataset, tmp_path / "copy", "reference") == 0
    assert cached_files(dataset / "features" / "reference") == reference
    assert run(dataset, tiny_model_dir, "reference", "--layers", "1") == 2
    assert "layers: cached [1, 2], asked [1]" in capsys.readouterr().err
    assert run(dataset, tiny_model_dir, "reference", "--dtype", "float16") == 2
    assert "dtype: cached 'float32', asked 'float16'" in capsys.readouterr().err
    assert (dataset / "features" / "reference" / MANIFEST).read_text() == before
    assert run(dataset, tiny_model_dir, "other", "--layers", "7") == 2
    assert "--layers [7]: give distinct hidden_states indices in 0..2" in capsys.readouterr().err
    assert run(dataset, tiny_model_dir, "other", "--corpus", "mtg_jamendo") == 2
    assert "not prepared" in capsys.readouterr().err


def test_default_name_is_the_model_and_the_layers():
    assert extract_features.default_name("/models/music2emo-mert95m/", [6, 7]) == "music2emo-mert95m-layers6-7"
    assert extract_features.default_name("music2emo-hf/music2emo-mert95m", [5]) == "music2emo-mert95m-layers5"


def _extract_as_one_of_two_ranks(dataset: str, model: str) -> None:
    assert run(Path(dataset), Path(model), "two-ranks") == 0
    assert PartialState().num_processes == 2  # as the script saw it


@pytest.mark.slow
def test_two_ranks_write_the_same_files_as_one(dataset, tiny_model_dir, reference):
    # debug_launcher forks. Forked from this test process, whose torch has run multi-threaded, the ranks hang in
    # their first parallel torch op; so they are forked from a fresh interpreter, as `accelerate launch` starts them.
    launch = (
        "import sys, accelerate; from tests.test_extract_features import _extract_as_one_of_two_ranks as extract; "
        "accelerate.debug_launcher(extract, args=tuple(sys.argv[1:]), num_processes=2)"
    )
    done = subprocess.run(
        [sys.executable, "-c", launch, str(dataset), str(tiny_model_dir)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    two_ranks = dataset / "features" / "two-ranks"
    assert sorted(cached_files(two_ranks)) == sorted(reference)
    for corpus, track_id in (("deam", "10"), ("deam", "2"), ("emotify", "classical/1")):
        one = load_track_features(dataset / "features" / "reference", corpus, track_id)
        two = load_track_features(two_ranks, corpus, track_id)
        for key in one:
            torch.testing.assert_close(two[key], one[key], atol=1e-6, rtol=1e-6)
