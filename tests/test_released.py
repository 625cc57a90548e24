"""The authors' released checkpoints as the default model: resolved through a Hugging Face Hub cache laid out as
`huggingface_hub` lays it (HF_HUB_CACHE, HF_HUB_OFFLINE=1), holding checkpoints written by a LightningModule that
registers what theirs does and a MERT-v1-style backbone repo, or downloaded from local servers answering as the Hub
does; converted once, cached safely, and used by the CLI, `transformers.pipeline("music-emotion")` and the Space with
no model named."""

from __future__ import annotations

import json
import re
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import soundfile as sf
import torch

from music2emo_hf import released
from music2emo_hf.released import CHECKPOINTS, ReleasedModelError, ReleasedReference, parse_reference

from .conftest import ROOT, tone
from .originals import (
    RELEASED_FILES,
    OriginalNetwork,
    btc_weights_file,
    hub_cache_repo,
    lightning_checkpoint,
    mert_v1_style_repo,
    serving_hub,
)

COMMIT = "3f1c0b8f2a9d4e6c8b7a5d3e1f0c9b8a7d6e5f4c"
MERT_COMMIT = "2a4c6e8f0b1d3f5a7c9e1b3d5f7a9c1e3b5d7f9a"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A Hub cache with the eight released files (trained one epoch by Lightning, each from its own seed) and the
    backbone; `networks` holds the authors' network of each file, with the weights it saved."""
    work = tmp_path_factory.mktemp("released")
    networks, files = {}, {}
    for seed, (name, teacher_outputs) in enumerate(RELEASED_FILES.items()):
        torch.manual_seed(seed)
        networks[name] = OriginalNetwork(teacher_outputs)
        lightning_checkpoint(work / f"{name}.ckpt", networks[name], work, save_hyperparameters=name == "J_all")
        files[f"saved_models/{name}.ckpt"] = work / f"{name}.ckpt"
    files["inference/data/btc_model_large_voca.pt"] = btc_weights_file(work / "btc_model_large_voca.pt")
    cache = work / "hub"
    hub_cache_repo(cache, "amaai-lab/music2emo", files, COMMIT)
    mert = mert_v1_style_repo(work / "mert")
    hub_cache_repo(cache, "m-a-p/MERT-v1-95M", {n: mert / n for n in ("config.json", "pytorch_model.bin",
                                                                        "preprocessor_config.json")}, MERT_COMMIT)
    return type("Hub", (), {"cache": cache, "networks": networks, "work": work})


@pytest.fixture
def offline_cache(hub, tmp_path, monkeypatch):
    """This process reads `hub` offline and converts into a fresh cache; returns the environment for a subprocess."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub.cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("MUSIC2EMO_CACHE", str(tmp_path / "converted"))
    return {**os.environ, "HF_HUB_CACHE": str(hub.cache), "HF_HUB_OFFLINE": "1",
            "MUSIC2EMO_CACHE": str(tmp_path / "converted"), "PYTHONPATH": str(ROOT)}


def run_cli(env, *args, timeout=600):
    return subprocess.run([sys.executable, "-m", "music2emo_hf.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def online_at(monkeypatch, endpoint: str, hub_cache: Path) -> None:
    """huggingface_hub online, talking to `endpoint` (a local server) and downloading into `hub_cache`; this package's
    check of whether the Hub answers asked again."""
    from huggingface_hub import constants

    from music2emo_hf import hub as hub_module

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(hub_module, "_reachable", None)


def test_references_name_the_eight_files_and_nothing_else():
    assert parse_reference("amaai-lab/music2emo") == ReleasedReference("J_all", "main")
    assert parse_reference("amaai-lab/music2emo:D_all") == ReleasedReference("D_all", "main")
    assert parse_reference("AMAAI-Lab/music2emo:saved_models/pmemo_best.ckpt@v1.0") == ReleasedReference(
        "pmemo_best", "v1.0")
    assert parse_reference(f"amaai-lab/music2emo:E_all@{COMMIT}").revision == COMMIT
    assert str(parse_reference("amaai-lab/music2emo:E_all@v1.0")) == "amaai-lab/music2emo:E_all@v1.0"
    for other in ("music2emo-hf/music2emo-mert95m", "m-a-p/MERT-v1-95M", "amaai-lab/music2emo-other", str(ROOT)):
        assert parse_reference(other) is None
    with pytest.raises(ReleasedModelError, match="choose one of J_all, D_all, E_all, P_all, jamendo_best"):
        parse_reference("amaai-lab/music2emo:K_all")
    assert set(CHECKPOINTS) == set(RELEASED_FILES)


@pytest.mark.slow
def test_all_eight_released_files_convert_to_the_authors_networks(hub, offline_cache):
    """Each file's heads equal the authors' network with the weights it saved, to 1e-5."""
    from music2emo_hf import Music2EmoModel

    generator = torch.Generator().manual_seed(1)
    x_mert = torch.randn(3, 1536, generator=generator)
    roots, attrs = torch.randint(0, 14, (2, 3, 100), generator=generator)
    key = torch.tensor([[0], [1], [1]])
    mert = torch.load(hub.cache / "models--m-a-p--MERT-v1-95M" / "snapshots" / MERT_COMMIT / "pytorch_model.bin")
    for name, network in hub.networks.items():
        folder = released.resolve(f"amaai-lab/music2emo:{name}", say=lambda note: None)
        assert folder == released.cache_root() / "amaai-lab--music2emo" / COMMIT / name
        model = Music2EmoModel.from_pretrained(folder).eval()
        assert not model.config.untrained and model.config.backbone_name_or_path == "m-a-p/MERT-v1-95M"
        assert model.config.source == {
            "repo": "amaai-lab/music2emo", "checkpoint": name, "file": f"saved_models/{name}.ckpt",
            "revision": COMMIT, "btc": "inference/data/btc_model_large_voca.pt",
            "backbone": {"repo": "m-a-p/MERT-v1-95M", "file": "pytorch_model.bin", "revision": MERT_COMMIT},
        }
        assert model.config.harmony == "btc" and model.config.pooling == "mean" and (folder / "btc.safetensors").is_file()
        with torch.no_grad():
            expected = network(x_mert, roots, attrs, key)
            ours = model(chunk_embeddings=x_mert[:, None], chunk_durations=torch.ones(3, 1), chord_root_ids=roots,
                         chord_quality_ids=attrs, mode_ids=key[:, 0])
        outputs = [*ours.logits.values(), *ours.regression.values()]
        assert len(outputs) == len(expected), name
        for got, want in zip(outputs, expected):
            assert (got - want).abs().max() <= 1e-5, name
        # The backbone is the repo's .bin, its legacy weight-norm keys included.
        weight_norm = model.backbone.encoder.pos_conv_embed.conv.parametrizations.weight
        assert torch.equal(weight_norm.original0, mert["encoder.pos_conv_embed.conv.weight_g"])
        assert torch.equal(weight_norm.original1, mert["encoder.pos_conv_embed.conv.weight_v"])


@pytest.mark.slow
def test_the_cli_default_is_j_all_converted_once(hub, offline_cache, tmp_path, write_wav, capsys):
    from music2emo_hf.cli import main

    clip = str(write_wav("clip.wav", tone(4.0)))
    options = ("--top-k", "3")
    first = run_cli(offline_cache, "predict", clip, *options)
    assert first.returncode == 0, first.stderr
    assert "converting saved_models/J_all.ckpt" in first.stderr
    assert "CC-BY-NC-4.0: non-commercial use only" in first.stderr and "Apache-2.0" in first.stderr
    assert "untrained" not in first.stderr
    answer = json.loads(first.stdout)
    assert answer["model"] == {"repo": "amaai-lab/music2emo", "checkpoint": "J_all", "revision": COMMIT,
                               "backbone": f"m-a-p/MERT-v1-95M@{MERT_COMMIT}"}
    assert "warning" not in answer and len(answer["moods"]) == 3

    entry = Path(offline_cache["MUSIC2EMO_CACHE"]) / "amaai-lab--music2emo" / COMMIT / "J_all"
    stamp = (entry / "model.safetensors").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["predict", clip, *options]) == 0  # the second run (in this process, reading the same caches)
    second = capsys.readouterr()
    assert "converting" not in second.err and "Terms" not in second.err
    assert json.loads(second.out) == answer
    assert (entry / "model.safetensors").stat().st_mtime_ns == stamp


def test_the_pipeline_without_a_model_answers_from_j_all(hub, offline_cache):
    import transformers

    with warnings.catch_warnings():
        warnings.simplefilter("error", category=UserWarning)  # no UntrainedModelWarning
        pipe = transformers.pipeline("music-emotion", device="cpu")
    answer = pipe({"array": tone(3.0), "sampling_rate": 24000}, top_k=2)
    assert answer["model"]["checkpoint"] == "J_all" and answer["model"]["revision"] == COMMIT
    assert 1 <= len(answer["moods"]) <= 2 and "warning" not in answer


def test_the_space_answers_from_j_all_and_states_the_terms(hub, offline_cache, monkeypatch, write_wav):
    from .test_space import load_space

    app = load_space()
    monkeypatch.delenv(app.MODELS_VARIABLE, raising=False)
    default = app.available_models()[0]
    assert default == "amaai-lab/music2emo"
    try:
        info, _ = app.describe_model(default)
        assert "saved_models/J_all.ckpt" in info and "CC-BY-NC-4.0" in info and "untrained" not in info
        *_, answer = app.analyse(str(write_wav("clip.wav", tone(3.0))), default, "")
    finally:
        app.load_pipeline.cache_clear()
    assert answer["model"]["checkpoint"] == "J_all" and "warning" not in answer


@pytest.mark.slow
def test_two_first_runs_at_once_leave_one_good_entry(hub, offline_cache):
    script = ("import sys; from music2emo_hf.released import resolve; "
              "print(resolve('amaai-lab/music2emo:P_all'))")
    runs = [subprocess.Popen([sys.executable, "-c", script], env=offline_cache, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    folders = {out.strip() for out, _ in outputs}
    assert len(folders) == 1
    assert sum("converting" in err for _, err in outputs) == 1  # the other waited, then loaded it
    folder = Path(folders.pop())
    assert released.entry_problem(folder) is None
    assert [p.name for p in folder.parent.iterdir() if "partial" in p.name] == []


@pytest.mark.slow
def test_a_killed_conversion_leaves_nothing_that_loads(hub, offline_cache):
    script = "from music2emo_hf.released import resolve; resolve('amaai-lab/music2emo:E_all')"
    run = subprocess.Popen([sys.executable, "-c", script], env=offline_cache, stderr=subprocess.PIPE, text=True)
    for line in run.stderr:
        if "converting" in line:  # in the middle of converting
            run.kill()
            break
    run.wait(timeout=60)
    entry = Path(offline_cache["MUSIC2EMO_CACHE"]) / "amaai-lab--music2emo" / COMMIT / "E_all"
    assert not entry.exists()
    assert released.resolve("amaai-lab/music2emo:E_all", say=lambda note: None) == entry
    assert released.entry_problem(entry) is None


def test_a_damaged_entry_is_rebuilt_with_a_note(hub, offline_cache):
    notes = []
    folder = released.resolve("amaai-lab/music2emo:deam_best", say=notes.append)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the weights
    weights.write_bytes(bytes(data))
    notes.clear()
    assert released.resolve("amaai-lab/music2emo:deam_best", say=notes.append) == folder
    damaged = [note for note in notes if note.startswith("the converted")]
    assert len(damaged) == 1 and "model.safetensors does not match its checksum" in damaged[0]
    assert released.entry_problem(folder) is None


def test_an_entry_as_it_was_made_is_not_hashed_again_at_each_start(hub, offline_cache, monkeypatch):
    """Hashing the converted model (about 400 MB) took most of a second of every start; a file with the size and
    modification time it was made with is taken as made, and one touched since is hashed."""
    folder = released.resolve("amaai-lab/music2emo:deam_best", say=lambda _: None)
    hashed = []
    real = released.file_sha256
    monkeypatch.setattr(released, "file_sha256", lambda path: hashed.append(Path(path).name) or real(path))
    assert released.resolve("amaai-lab/music2emo:deam_best", say=lambda _: None) == folder and hashed == []
    os.utime(folder / "config.json")  # touched, not changed
    assert released.entry_problem(folder) is None and hashed == ["config.json"]


def test_a_run_waiting_for_another_processs_conversion_says_so(hub, offline_cache):
    """The lock of an entry held elsewhere (here by the test, as another process converting would hold it): the run
    says what it waits for instead of hanging silently, then converts once the lock is free."""
    import threading
    import time

    from filelock import FileLock

    reference = parse_reference("amaai-lab/music2emo:deam_best")
    folder = released.entry_folder(reference, COMMIT)
    folder.parent.mkdir(parents=True)
    notes, folders = [], []
    with FileLock(str(folder) + ".lock"):
        run = threading.Thread(target=lambda: folders.append(released.resolve(reference, say=notes.append)))
        run.start()
        deadline = time.monotonic() + 120
        while not notes and run.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        assert notes == [f"waiting for another process's conversion of {reference} (it holds {folder}.lock)"]
    run.join(timeout=300)
    assert folders == [folder] and released.entry_problem(folder) is None
    assert any(note.startswith("converting saved_models/deam_best.ckpt") for note in notes)


def test_a_cache_that_cannot_be_written_is_named_with_the_way_around_it(hub, offline_cache, tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("MUSIC2EMO_CACHE", str(tmp_path / "a-file" / "converted"))
    with pytest.raises(ReleasedModelError, match=re.escape(
            f"amaai-lab/music2emo:deam_best cannot be converted: the cache of converted models, "
            f"{tmp_path / 'a-file' / 'converted'}, cannot be written (Not a directory); set MUSIC2EMO_CACHE to a "
            "folder you can write (or make room in this one)")):
        released.resolve("amaai-lab/music2emo:deam_best", say=lambda note: None)
    read_only_home = tmp_path / "read-only-home"
    read_only_home.write_text("")  # a folder above the cache that cannot be made (as on a read-only volume)
    monkeypatch.setenv("MUSIC2EMO_CACHE", str(read_only_home / "music2emo-hf" / "converted"))
    with pytest.raises(ReleasedModelError, match="cannot be written .*; set MUSIC2EMO_CACHE to a folder you can"):
        released.resolve("amaai-lab/music2emo:deam_best", say=lambda note: None)


def test_a_full_disk_while_converting_is_named_with_the_way_around_it(offline_cache, tmp_path):
    """safetensors reports a full disk as its own error, not an OSError (here a file-size limit: EFBIG)."""
    limited = ("import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
               "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000)); from music2emo_hf import released\n"
               "try: released.resolve('amaai-lab/music2emo:deam_best', say=lambda note: None)\n"
               "except released.ReleasedModelError as error: print(error)")
    done = subprocess.run([sys.executable, "-c", limited], env=offline_cache, capture_output=True, text=True,
                          timeout=300)
    assert f"amaai-lab/music2emo:deam_best cannot be converted: the cache of converted models, {tmp_path / 'converted'}" \
           ", cannot be written (" in done.stdout and "set MUSIC2EMO_CACHE to a folder you can write" in done.stdout, \
        done.stdout + done.stderr


def test_relative_caches_are_one_folder_wherever_a_command_runs(tmp_path, monkeypatch):
    """The converted models' cache and the exported backbones' cache alike."""
    from music2emo_hf import runtimes

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MUSIC2EMO_CACHE", "converted")
    monkeypatch.setenv("MUSIC2EMO_COMPILED_CACHE", "compiled")
    assert released.cache_root() == Path(os.getcwd()) / "converted"
    assert runtimes.cache_root() == Path(os.getcwd()) / "compiled"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MUSIC2EMO_CACHE", "~/converted")
    monkeypatch.setenv("MUSIC2EMO_COMPILED_CACHE", "~/compiled")
    assert released.cache_root() == tmp_path / "home" / "converted"
    assert runtimes.cache_root() == tmp_path / "home" / "compiled"


def test_a_complete_entry_named_otherwise_loads_from_a_cache_that_cannot_be_written(hub, offline_cache, monkeypatch):
    """A shared read-only cache of converted models: a tag or branch naming a commit it holds needs no lock file, and
    its ref is only a shortcut."""
    import filelock

    folder = released.resolve("amaai-lab/music2emo:deam_best", say=lambda note: None)
    ref = folder.parent.parent / "refs" / "main"
    ref.unlink()  # as if named by a tag this cache never saw

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(filelock, "FileLock", read_only)
    monkeypatch.setattr(released, "write_atomic", read_only)
    assert released.resolve("amaai-lab/music2emo:deam_best", say=lambda note: None) == folder


def test_a_damaged_file_in_the_hub_cache_is_refused_before_it_is_converted(hub, offline_cache, tmp_path, monkeypatch):
    """huggingface_hub never checks a cached file again; the cache names large files by their sha256."""
    import shutil

    from huggingface_hub import constants

    cache = tmp_path / "hub"
    shutil.copytree(hub.cache, cache, symlinks=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    snapshot = cache / "models--amaai-lab--music2emo" / "snapshots" / COMMIT / "saved_models" / "deam_best.ckpt"
    blob = snapshot.resolve()
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a disk fault, or a copy between machines gone wrong
    blob.write_bytes(bytes(data))
    with pytest.raises(ReleasedModelError, match=re.escape(
            f"amaai-lab/music2emo saved_models/deam_best.ckpt in the Hugging Face cache ({snapshot}) is damaged: its "
            "bytes are not those the Hub published. Fetch it again with `hf download amaai-lab/music2emo "
            f"saved_models/deam_best.ckpt --revision {COMMIT} --force-download`")):
        released.resolve("amaai-lab/music2emo:deam_best", say=lambda note: None)
    assert not list((tmp_path / "converted").rglob("model.safetensors"))  # nothing converted from it
    from music2emo_hf.cli import main

    out = tmp_path / "explicit"  # `convert-original` too, which converted it silently
    assert main(["convert-original", "amaai-lab/music2emo:deam_best", "--out", str(out)]) == 2
    assert not out.exists()


def test_offline_without_the_files_says_what_is_missing_and_how_to_get_it(hub, tmp_path, write_wav, monkeypatch,
                                                                         capsys):
    """Every missing file is named at once, with the commands that fetch them all (`music2emo predict` in this
    process; the command's own process is run above)."""
    from huggingface_hub import constants

    from music2emo_hf.cli import main

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("MUSIC2EMO_CACHE", str(tmp_path / "converted"))
    clip = str(write_wav("x.wav", tone(1.0)))

    def predict_from(hub_cache: Path, *args: str) -> str:
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
        capsys.readouterr()
        assert main(["predict", *args, clip]) == 2
        stderr = capsys.readouterr().err
        assert "Traceback" not in stderr
        return stderr.strip().splitlines()[-1]

    error = predict_from(tmp_path / "empty-hub")
    assert ("amaai-lab/music2emo saved_models/J_all.ckpt (about 13 MB), inference/data/btc_model_large_voca.pt "
            "(about 12 MB) and m-a-p/MERT-v1-95M config.json, pytorch_model.bin (about 380 MB) are not in the "
            "Hugging Face cache") in error
    assert ("run `hf download amaai-lab/music2emo saved_models/J_all.ckpt inference/data/btc_model_large_voca.pt` "
            "and `hf download m-a-p/MERT-v1-95M config.json pytorch_model.bin`, then copy the cache") in error
    assert "--model" in error
    assert not (tmp_path / "converted" / "amaai-lab--music2emo" / "refs").exists()

    only_heads = tmp_path / "only-heads"  # the checkpoint cached, BTC's weights and the backbone not
    hub_cache_repo(only_heads, "amaai-lab/music2emo", {"saved_models/J_all.ckpt": hub.work / "J_all.ckpt"}, COMMIT)
    error = predict_from(only_heads, "--model", f"amaai-lab/music2emo@{COMMIT}")
    assert "J_all.ckpt" not in error
    assert (f"`hf download amaai-lab/music2emo inference/data/btc_model_large_voca.pt --revision {COMMIT}` and "
            "`hf download m-a-p/MERT-v1-95M config.json pytorch_model.bin`") in error

    no_backbone = tmp_path / "no-backbone"  # the release cached, the backbone not
    hub_cache_repo(no_backbone, "amaai-lab/music2emo", {
        "saved_models/J_all.ckpt": hub.work / "J_all.ckpt",
        "inference/data/btc_model_large_voca.pt": hub.work / "btc_model_large_voca.pt"}, COMMIT)
    error = predict_from(no_backbone)
    assert "amaai-lab/music2emo saved" not in error
    assert "m-a-p/MERT-v1-95M config.json, pytorch_model.bin (about 380 MB) are not in" in error
    assert "run `hf download m-a-p/MERT-v1-95M config.json pytorch_model.bin`, then" in error


def test_convert_original_offline_names_every_missing_file_at_once(tmp_path, monkeypatch, capsys):
    """With the checkpoint, BTC's weights and the backbone all to come from the Hub, it named the checkpoint alone;
    the next run BTC's weights, the one after the backbone."""
    from huggingface_hub import constants

    from music2emo_hf.cli import main

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    assert main(["convert-original", "amaai-lab/music2emo", "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert ("amaai-lab/music2emo saved_models/J_all.ckpt (about 13 MB), inference/data/btc_model_large_voca.pt "
            "(about 12 MB) and m-a-p/MERT-v1-95M config.json, pytorch_model.bin (about 380 MB) are not in the "
            "Hugging Face cache") in error
    assert error.rstrip().endswith("then copy the cache here, or give the files themselves: the checkpoint's path, "
                                   "--btc FILE and --backbone DIR.")
    assert main(["convert-original", "amaai-lab/music2emo", "--out", str(tmp_path / "out"), "--btc",
                 str(tmp_path / "btc.pt")]) == 2  # what it can do without, it does not ask for
    error = capsys.readouterr().err
    assert "saved_models/J_all.ckpt (about 13 MB) is not in" in error and "MERT" not in error
    assert not (tmp_path / "out").exists()


def test_a_file_fetched_alone_names_only_itself_and_the_way_around_it(tmp_path, monkeypatch):
    """convert-original with a local checkpoint needs BTC's weights alone, not the whole model, and has no --model."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(released.ReleasedModelError) as missing:
        released.fetch_release_file("amaai-lab/music2emo", "inference/data/btc_model_large_voca.pt",
                                    alone="give BTC's weights file with --btc")
    assert str(missing.value).startswith(
        "amaai-lab/music2emo inference/data/btc_model_large_voca.pt (about 12 MB) is not in the Hugging Face cache")
    assert str(missing.value).endswith("then copy the cache here, or give BTC's weights file with --btc.")
    assert "MERT" not in str(missing.value) and "J_all" not in str(missing.value)


@pytest.mark.slow
def test_convert_original_takes_a_released_name(hub, offline_cache, tmp_path):
    from music2emo_hf.cli import main

    assert main(["convert-original", "amaai-lab/music2emo:emomusic_best", "--out", str(tmp_path / "emomusic")]) == 0
    config = json.loads((tmp_path / "emomusic" / "config.json").read_text())
    assert config["source"]["file"] == "saved_models/emomusic_best.ckpt" and config["source"]["revision"] == COMMIT
    assert config["harmony"] == "btc" and (tmp_path / "emomusic" / "btc.safetensors").is_file()
    card = (tmp_path / "emomusic" / "README.md").read_text()
    assert "CC-BY-NC-4.0 (non-commercial use only)" in card and "Apache-2.0" in card


def test_each_revision_answers_with_its_own_weights(hub, tmp_path, monkeypatch):
    """A release at a tag (`amaai-lab/music2emo@v1.0`) is downloaded and converted from that tag's commit and
    remembered under its own name: the plain name, used after it, still answers from main's commit. Offline later,
    the tag is found again through the ref huggingface_hub wrote for it."""
    from huggingface_hub import constants

    from music2emo_hf import Music2EmoModel

    tagged = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d"
    served = tmp_path / "served"
    torch.manual_seed(99)
    other = tmp_path / "J_all.ckpt"
    lightning_checkpoint(other, OriginalNetwork(RELEASED_FILES["J_all"]), tmp_path, save_hyperparameters=True)
    for commit, checkpoint, ref in ((tagged, other, "v1.0"), (COMMIT, hub.work / "J_all.ckpt", "main")):
        hub_cache_repo(served, "amaai-lab/music2emo", {"saved_models/J_all.ckpt": checkpoint,
                       "inference/data/btc_model_large_voca.pt": hub.work / "btc_model_large_voca.pt"}, commit, ref)
    mert = hub.cache / "models--m-a-p--MERT-v1-95M"
    shutil.copytree(mert, served / mert.name, symlinks=True)
    monkeypatch.setenv("MUSIC2EMO_CACHE", str(tmp_path / "converted"))

    downloaded = tmp_path / "hub"
    with serving_hub(served) as (endpoint, _):
        online_at(monkeypatch, endpoint, downloaded)
        at_tag = released.resolve("amaai-lab/music2emo@v1.0")
        at_main = released.resolve("amaai-lab/music2emo")
    assert (at_tag.parent.name, at_main.parent.name) == (tagged, COMMIT)
    assert (downloaded / "models--amaai-lab--music2emo" / "refs" / "v1.0").read_text() == tagged
    weights = [Music2EmoModel.from_pretrained(folder).heads["moods"][-1].weight for folder in (at_tag, at_main)]
    assert not torch.equal(*weights)

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert released.resolve("amaai-lab/music2emo@v1.0") == at_tag  # each remembered under its own name
    assert released.resolve("amaai-lab/music2emo") == at_main


def test_the_commit_is_read_from_the_hub_cache_layout_wherever_it_lies(tmp_path):
    """Even under a folder that happens to be called `snapshots`."""
    path = (tmp_path / "snapshots" / "hf" / "hub" / "models--amaai-lab--music2emo" / "snapshots" / COMMIT
            / "saved_models" / "J_all.ckpt")
    assert released._commit_of(str(path)) == COMMIT
    with pytest.raises(ReleasedModelError, match="not in a Hugging Face Hub cache snapshot"):
        released._commit_of(str(tmp_path / "J_all.ckpt"))


def test_a_download_whose_size_the_hub_does_not_give_is_announced_without_it(hub, tmp_path, monkeypatch):
    """A mirror (HF_ENDPOINT) may leave out an LFS file's size."""
    notes = []
    with serving_hub(hub.cache, linked_size=False) as (endpoint, _):
        online_at(monkeypatch, endpoint, tmp_path / "hub")
        path, commit = released.fetch_release_file("amaai-lab/music2emo", say=notes.append)
    assert notes == ["downloading amaai-lab/music2emo/saved_models/J_all.ckpt"] and commit == COMMIT
    snapshot = f"models--amaai-lab--music2emo/snapshots/{COMMIT}/saved_models/J_all.ckpt"
    assert Path(path).read_bytes() == (hub.cache / snapshot).read_bytes()


def test_a_revision_or_file_the_hub_does_not_have_is_named(hub, tmp_path, monkeypatch):
    """huggingface_hub's first line for either is only "404 Client Error."."""
    with serving_hub(hub.cache) as (endpoint, _):
        online_at(monkeypatch, endpoint, tmp_path / "hub")
        with pytest.raises(ReleasedModelError, match=re.escape(
                "amaai-lab/music2emo:J_all@v9: the Hub has no revision 'v9' of amaai-lab/music2emo; give a branch, "
                "tag or commit it has, or leave @REVISION out.")):
            released.fetch_release_file("amaai-lab/music2emo:J_all@v9")
        with pytest.raises(ReleasedModelError, match=re.escape(
                "amaai-lab/music2emo has no file saved_models/X_all.ckpt at revision 'main'; give a revision")):
            released.fetch_release_file("amaai-lab/music2emo", "saved_models/X_all.ckpt")


def test_the_hub_is_reached_at_its_endpoints_port_and_through_a_proxy(monkeypatch):
    """A mirror on another port, or a network whose only way out is a proxy, is not "offline"."""
    import socket

    from huggingface_hub import constants

    from music2emo_hf import hub

    for variable in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
                     "no_proxy"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with socket.create_server(("127.0.0.1", 0)) as listening, socket.create_server(("127.0.0.1", 0)) as closed:
        port, nobody = listening.getsockname()[1], closed.getsockname()[1]
        closed.close()  # nothing listens there any more
        for endpoint, proxy, reached in ((f"http://127.0.0.1:{port}", None, True),
                                         ("https://hub.invalid", f"http://127.0.0.1:{port}", True),
                                         (f"http://127.0.0.1:{nobody}", None, False)):
            monkeypatch.setattr(constants, "ENDPOINT", endpoint)
            if proxy:
                monkeypatch.setenv("HTTPS_PROXY", proxy)
            monkeypatch.setattr(hub, "_reachable", None)
            assert hub.hub_reachable(timeout=2) is reached, (endpoint, proxy)


def test_a_download_that_fails_though_the_hub_answers_says_why(hub, tmp_path, monkeypatch):
    """A Hub whose certificate does not verify (as behind a proxy that replaces it): a local HTTPS server with a
    self-signed certificate as the endpoint. The host answers, so the error keeps the real reason; it comes at once,
    without huggingface_hub's retries (two rounds of them took 46 s), and nothing is announced as downloading. So too
    when only the backbone is missing."""
    import http.server
    import ssl
    import threading

    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    from music2emo_hf import hub as hub_module

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(Path(__file__).parent / "tls" / "self-signed-127.0.0.1.pem")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"https://127.0.0.1:{server.server_address[1]}"
    waits = []
    monkeypatch.setattr(_http.time, "sleep", waits.append)  # huggingface_hub's backoff, recorded, not waited
    online_at(monkeypatch, endpoint, tmp_path / "empty-hub")
    monkeypatch.setenv("MUSIC2EMO_CACHE", str(tmp_path / "converted"))
    refused = "the download failed ([SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate"
    announced = []
    try:
        with pytest.raises(ReleasedModelError, match=re.escape(
                "is not in the Hugging Face cache (" + str(tmp_path / "empty-hub") + ") and " + refused)):
            released.fetch_release_file("amaai-lab/music2emo", say=announced.append,
                                        alone="give a downloaded checkpoint file instead")
        snapshot = hub.cache / "models--amaai-lab--music2emo" / "snapshots" / COMMIT
        hub_cache_repo(tmp_path / "release-only", "amaai-lab/music2emo",
                       {name: snapshot / name for name in ("saved_models/J_all.ckpt",
                                                           "inference/data/btc_model_large_voca.pt")}, COMMIT)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "release-only"))
        with pytest.raises(ReleasedModelError, match=re.escape("m-a-p/MERT-v1-95M config.json, pytorch_model.bin (about "
                                                               "380 MB) are not in the Hugging Face cache (")
                           + ".*" + re.escape(refused)):
            released.resolve("amaai-lab/music2emo", say=announced.append)
    finally:
        server.shutdown()
        server.server_close()
    assert hub_module.hub_reachable() is True
    assert not any("downloading" in note for note in announced)
    assert waits == []  # not retried: it cannot pass


def test_the_first_use_downloads_the_release_and_later_runs_need_no_network(hub, tmp_path, monkeypatch):
    """From an empty Hub cache, with the Hub answering (a local server answering as its `resolve` endpoint does, from
    `hub`'s files): the checkpoint, BTC's weights and the backbone are downloaded into huggingface_hub's cache, each
    announced with its size, MERT's .bin taken where the repo has no safetensors; then converted. The Hub's first
    answer is a 503, which is asked again. A second run, offline, answers from the caches."""
    from huggingface_hub import constants

    from music2emo_hf import Music2EmoModel

    downloaded = tmp_path / "hub"
    monkeypatch.setenv("MUSIC2EMO_CACHE", str(tmp_path / "converted"))
    notes = []
    with serving_hub(hub.cache, unavailable=1) as (endpoint, requests):
        online_at(monkeypatch, endpoint, downloaded)
        folder = released.resolve("amaai-lab/music2emo", say=notes.append)

    fetched = [("amaai-lab/music2emo", COMMIT, "saved_models/J_all.ckpt"),
               ("amaai-lab/music2emo", COMMIT, "inference/data/btc_model_large_voca.pt"),
               ("m-a-p/MERT-v1-95M", MERT_COMMIT, "config.json"),
               ("m-a-p/MERT-v1-95M", MERT_COMMIT, "pytorch_model.bin")]
    for repo, commit, name in fetched:
        snapshots = f"models--{repo.replace('/', '--')}/snapshots/{commit}/{name}"
        assert (downloaded / snapshots).read_bytes() == (hub.cache / snapshots).read_bytes(), name
        assert (downloaded / f"models--{repo.replace('/', '--')}" / "refs" / "main").read_text() == commit
        size = (hub.cache / snapshots).stat().st_size
        assert f"downloading {repo}/{name} ({size / 1e6:,.0f} MB)" in notes or size < 1e6, (notes, name)
    assert "downloading m-a-p/MERT-v1-95M/config.json (" in " ".join(notes)
    assert not any("model.safetensors" in note for note in notes)  # asked for (404), not announced
    assert ("HEAD", f"/m-a-p/MERT-v1-95M/resolve/{MERT_COMMIT}/model.safetensors") in requests  # at config.json's commit
    assert requests[:2] == [("HEAD", "/amaai-lab/music2emo/resolve/main/saved_models/J_all.ckpt")] * 2
    assert notes[-1].startswith("converting saved_models/J_all.ckpt")
    assert folder == released.cache_root() / "amaai-lab--music2emo" / COMMIT / "J_all"
    assert Music2EmoModel.config_class.from_pretrained(folder).source["backbone"] == {
        "repo": "m-a-p/MERT-v1-95M", "file": "pytorch_model.bin", "revision": MERT_COMMIT}

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    later = []
    assert released.resolve("amaai-lab/music2emo", say=later.append) == folder and later == []


def test_a_hub_model_whose_weights_are_not_in_the_cache_offline_is_said_to_lack_them(tiny_model_dir, tmp_path,
                                                                                     monkeypatch, capsys):
    """A Hub model of which huggingface_hub fetched the config alone (`hf download REPO config.json`), then loaded
    offline: transformers said "See the original errors:" and nothing after it."""
    from huggingface_hub import constants, hf_hub_download

    from music2emo_hf.cli import main

    hub_cache_repo(tmp_path / "served", "you/tiny", {name: tiny_model_dir / name for name in
                                                     ("config.json", "preprocessor_config.json", "model.safetensors")},
                   COMMIT)
    with serving_hub(tmp_path / "served") as (endpoint, _):
        online_at(monkeypatch, endpoint, tmp_path / "cache")
        for name in ("config.json", "preprocessor_config.json"):
            hf_hub_download("you/tiny", name)  # written by huggingface_hub, as a user's partial download is
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    sf.write(tmp_path / "x.wav", tone(1.0), 24000)
    assert main(["predict", str(tmp_path / "x.wav"), "--model", "you/tiny", "--device", "cpu"]) == 2
    assert ("its weights (model.safetensors) are not in the local Hugging Face cache, and the Hub could not be "
            "reached; fetch them where it can: hf download you/tiny") in capsys.readouterr().err
