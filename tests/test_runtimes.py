"""The backbone's inference runtimes (`runtime=` of the pipeline, `--runtime` of the command): each installed one gives
PyTorch's answers within the stated tolerance, the export is made once per set of weights and kept on disk, and a
runtime that cannot run, or does not reproduce PyTorch, is named and never used silently."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

import music2emo_hf  # noqa: F401  (registers the task)
from music2emo_hf import Music2EmoModel
from music2emo_hf import runtimes
from music2emo_hf.runtimes import (
    BFLOAT16_COSINE,
    EXACT_COSINE,
    RuntimeUnavailable,
    backbone_runtime,
    cache_root,
    fingerprint,
    installed,
    native_bfloat16,
    obstacles,
)

from .conftest import mood_scores, tone

EXPORTED = [pytest.param(name, marks=pytest.mark.skipif(not installed(name), reason=f"{name} is not installed"))
            for name in ("openvino", "onnxruntime")]


def make_pipeline(model_dir, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return transformers.pipeline("music-emotion", model=str(model_dir), device="cpu", **options)


@pytest.fixture(autouse=True, scope="module")
def own_cache(tmp_path_factory):
    """A cache of this module's own: its tests remove and tamper with entries, which other tests must not see."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MUSIC2EMO_COMPILED_CACHE", str(tmp_path_factory.mktemp("compiled")))
        yield


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny model of its own (the cache entries tested here belong to it alone)."""
    from music2emo_hf.cli import main

    out = tmp_path_factory.mktemp("runtime-model")
    assert main(["init", "--config", "hub_configs/tiny-random", str(out)]) == 0
    return out


@pytest.mark.parametrize("runtime", EXPORTED)
def test_each_runtime_gives_the_torch_answers(model_dir, runtime):
    # 25 s: two full 10 s chunks in one batch and a 5 s last chunk, so both batch size and length vary
    audio = np.concatenate([tone(9, freq=220.0), tone(9, freq=330.0, seed=1), tone(7, freq=165.0, seed=2)])
    ask = dict(sampling_rate=24000, return_embedding=True, return_segments=True, chunk_batch_size=2)
    reference = make_pipeline(model_dir, runtime="torch")(audio, **ask)
    pipe = make_pipeline(model_dir, runtime=runtime)
    assert pipe.backbone_runtime.name == runtime
    answer = pipe(audio, **ask)
    a, b = np.array(answer["embedding"]), np.array(reference["embedding"])
    assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) >= EXACT_COSINE
    assert max(abs(mood_scores(answer)[label] - score) for label, score in mood_scores(reference).items()) <= 1e-4
    assert abs(answer["valence"] - reference["valence"]) <= 1e-4 and abs(answer["arousal"] - reference["arousal"]) <= 1e-4
    assert len(answer["segments"]) == 3
    for ours, theirs in zip(answer["segments"], reference["segments"]):
        assert abs(ours["valence"] - theirs["valence"]) <= 1e-4


@pytest.mark.parametrize("runtime", EXPORTED)
def test_one_pipeline_called_from_several_threads_answers_each_call_as_alone(model_dir, runtime):
    """A web server's threads share one pipeline: OpenVINO's one request, shared unguarded, gave one call another's
    answer."""
    from concurrent.futures import ThreadPoolExecutor

    pipe = make_pipeline(model_dir, runtime=runtime)
    clips = [tone(4, freq=freq, seed=seed) for seed, freq in enumerate((110.0, 220.0, 330.0, 440.0, 550.0, 660.0))]
    alone = [pipe(clip, return_embedding=True)["embedding"] for clip in clips]
    with ThreadPoolExecutor(len(clips)) as threads:
        together = list(threads.map(lambda clip: pipe(clip, return_embedding=True)["embedding"], clips))
    assert together == alone


@pytest.mark.parametrize("runtime, precision", [
    *(pytest.param(name, "float32", marks=pytest.mark.skipif(not installed(name), reason=f"{name} is not installed"))
      for name in ("openvino", "onnxruntime")), ("torch", "int8")])
def test_a_runtime_follows_the_models_weights_when_they_change(model_dir, runtime, precision, capsys):
    """From a review: weights changed after the pipeline was made (fine-tuning, `load_state_dict`) were not used by an
    exported graph or an int8 copy, which kept answering for the old ones. `pipe.model` is what answers."""
    pipe = make_pipeline(model_dir, runtime=runtime, precision=precision)
    clip = tone(4, freq=220.0)
    before = pipe(clip, return_embedding=True)["embedding"]
    with torch.no_grad():
        for weight in pipe.model.backbone.parameters():
            weight.mul_(1.5)
    capsys.readouterr()
    after = pipe(clip, return_embedding=True)["embedding"]
    assert "the model or its backbone's weights changed since its" in capsys.readouterr().err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fresh = transformers.pipeline("music-emotion", model=pipe.model, feature_extractor=pipe.feature_extractor,
                                      device="cpu", runtime=runtime, precision=precision)  # made from the new weights
    expected = fresh(clip, return_embedding=True)["embedding"]
    assert np.dot(after, expected) / np.linalg.norm(after) / np.linalg.norm(expected) >= EXACT_COSINE
    assert np.dot(before, expected) / np.linalg.norm(before) / np.linalg.norm(expected) < EXACT_COSINE


def test_another_model_set_on_a_torch_pipeline_is_the_one_that_answers(model_dir):
    """From a review: `pipe.model = other` kept PyTorch's runtime on the first model's backbone, under the other's
    heads."""
    pipe, other = make_pipeline(model_dir, runtime="torch"), make_pipeline(model_dir, runtime="torch")
    with torch.no_grad():
        for weight in other.model.parameters():
            weight.mul_(1.5)
    clip = tone(4, freq=220.0)
    expected = other(clip, return_embedding=True)
    pipe.model = other.model
    answer = pipe(clip, return_embedding=True)
    assert answer["embedding"] == expected["embedding"] and answer["valence"] == expected["valence"]


def test_int8_is_refused_on_a_gpu_before_anything_loads():
    """int8 is the CPU runtimes' (torch's dynamic quantization, onnxruntime's): on a GPU it is said at once, not
    quantized there. No GPU is needed to ask."""
    with pytest.raises(ValueError, match=r"precision='int8' runs on CPU only; on cuda use 'bfloat16' or 'auto'"):
        obstacles("auto", "int8", "cuda")
    assert obstacles("auto", "int8", "cpu") == ("int8", [])


@pytest.mark.skipif(not (installed("openvino") and installed("onnxruntime")), reason="needs both runtimes")
def test_auto_takes_the_fastest_runtime_for_the_arithmetic(model_dir):
    assert make_pipeline(model_dir).backbone_runtime.name == "openvino"
    assert make_pipeline(model_dir, precision="int8").backbone_runtime.name == "onnxruntime"
    with pytest.raises(RuntimeUnavailable, match=r"openvino is not offered in int8 \(in int8: onnxruntime, torch\)"):
        make_pipeline(model_dir, runtime="openvino", precision="int8")
    with pytest.raises(RuntimeUnavailable, match="onnxruntime is not offered in bfloat16"):
        make_pipeline(model_dir, runtime="onnxruntime", precision="bfloat16")


@pytest.mark.skipif(not installed("openvino"), reason="openvino is not installed")
def test_openvino_runs_bfloat16_only_where_the_cpu_has_it(model_dir, monkeypatch):
    monkeypatch.setattr(runtimes, "native_bfloat16", lambda device: False)
    assert make_pipeline(model_dir, precision="auto").backbone_runtime.arithmetic == "float32"
    with pytest.raises(RuntimeUnavailable, match="openvino runs bfloat16 only where the CPU has it natively"):
        make_pipeline(model_dir, runtime="openvino", precision="bfloat16")
    assert make_pipeline(model_dir, precision="bfloat16").backbone_runtime.name == "torch"  # emulated, as before


@pytest.mark.skipif(not installed("openvino") or not native_bfloat16(torch.device("cpu")),
                    reason="needs openvino and a CPU with native bfloat16 (AVX512-BF16 or AMX)")
def test_openvino_bfloat16_stays_close_to_float32_and_its_check_is_recorded(model_dir):
    audio = np.concatenate([tone(9, freq=220.0), tone(9, freq=330.0, seed=1)])
    ask = dict(sampling_rate=24000, return_embedding=True)
    reference = make_pipeline(model_dir, runtime="torch")(audio, **ask)
    pipe = make_pipeline(model_dir, precision="auto")
    assert (pipe.backbone_runtime.name, pipe.backbone_runtime.arithmetic) == ("openvino", "bfloat16")
    answer = pipe(audio, **ask)
    a, b = np.array(answer["embedding"]), np.array(reference["embedding"])
    assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) >= BFLOAT16_COSINE
    assert max(abs(mood_scores(answer)[label] - score) for label, score in mood_scores(reference).items()) <= 0.01
    checks = json.loads((cache_root() / fingerprint(pipe.model) / "checks.json").read_text())
    assert [check["cosine"] >= BFLOAT16_COSINE for key, check in checks.items() if key.endswith(" bfloat16")] == [True]


@pytest.mark.skipif(not installed("onnxruntime"), reason="onnxruntime is not installed")
def test_onnxruntime_int8_stays_close_to_float32(model_dir):
    """Approximate by design, and more so for this tiny random model than for MERT (benchmarks/inference.py)."""
    audio = np.concatenate([tone(9, freq=220.0), tone(9, freq=330.0, seed=1)])
    reference = make_pipeline(model_dir, runtime="torch")(audio, sampling_rate=24000, return_embedding=True)
    pipe = make_pipeline(model_dir, runtime="onnxruntime", precision="int8")
    assert pipe.backbone_runtime.encoder_path.name == runtimes.encoder_int8()  # in 7 bits on an x86-64 without VNNI
    answer = pipe(audio, sampling_rate=24000, return_embedding=True)
    a, b = np.array(answer["embedding"]), np.array(reference["embedding"])
    assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.95  # torch's int8 on this model: about 0.99
    assert abs(answer["valence"] - reference["valence"]) <= 0.05


@pytest.mark.skipif(not installed("onnxruntime"), reason="onnxruntime is not installed")
def test_an_int8_graph_that_does_not_reproduce_torch_is_refused(model_dir, monkeypatch):
    """The int8 graph is checked itself, not vouched for by its float32 graph: another model's in the entry (a damaged
    or tampered cache) is caught. The runtime's version is read from its module: an install under another
    distribution name (onnxruntime-gpu) has no "onnxruntime" distribution to ask."""
    from importlib import metadata

    from music2emo_hf.runtimes import INT8_COSINE

    other = Music2EmoModel.from_pretrained(model_dir).eval()
    model = Music2EmoModel.from_pretrained(model_dir).eval()
    with torch.no_grad():
        model.backbone.feature_projection.projection.weight.mul_(-1.0)
    backbone_runtime(other, "onnxruntime", "int8", say=lambda _: None)
    backbone_runtime(model, "onnxruntime", "int8", say=lambda _: None)
    folder = cache_root() / fingerprint(model)
    shutil.copy(cache_root() / fingerprint(other) / runtimes.encoder_int8(), folder / runtimes.encoder_int8())
    checks = json.loads((folder / "checks.json").read_text())
    (folder / "checks.json").write_text(json.dumps({key: value for key, value in checks.items() if "int8" not in key}))
    real_version = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: real_version("onnxruntime-gpu" if name == "onnxruntime"
                                                                       else name))
    with pytest.raises(RuntimeUnavailable, match=rf"encoder-int8(-7bit)?.onnx does not reproduce PyTorch on this model "
                                                 rf"\(cosine -?0\.\d+ < {INT8_COSINE}\)"):
        backbone_runtime(model, "onnxruntime", "int8", say=lambda _: None)
    shutil.rmtree(folder)


def test_an_unknown_runtime_is_named(model_dir):
    with pytest.raises(ValueError, match="runtime must be one of .*'onnxruntime'.*got 'tensorrt'"):
        backbone_runtime(Music2EmoModel.from_pretrained(model_dir), "tensorrt")


@pytest.mark.parametrize("runtime", EXPORTED)
def test_the_export_is_made_once_and_kept_on_disk(model_dir, runtime, capsys):
    model = Music2EmoModel.from_pretrained(model_dir).eval()
    folder = cache_root() / fingerprint(model)
    shutil.rmtree(folder, ignore_errors=True)
    backbone_runtime(model, runtime, say=print)
    assert "exporting the backbone for this model, once" in capsys.readouterr().out
    made = (folder / "encoder.onnx").stat().st_mtime_ns
    again = Music2EmoModel.from_pretrained(model_dir).eval()  # as a new process would load it
    backbone_runtime(again, runtime, say=print)
    assert capsys.readouterr().out == ""
    assert (folder / "encoder.onnx").stat().st_mtime_ns == made
    checks = json.loads((folder / "checks.json").read_text())
    assert any(key.startswith(runtime) and value["cosine"] >= EXACT_COSINE for key, value in checks.items())
    for damaged in ("{", None):  # cut short, or gone: the checks are made again, not a crash
        if damaged is None:
            (folder / "checks.json").unlink()
        else:
            (folder / "checks.json").write_text(damaged)
        assert backbone_runtime(again, runtime, say=print).name == runtime
        assert json.loads((folder / "checks.json").read_text()).keys() == {key for key in checks if
                                                                         key.startswith(runtime)}
    lock = Path(f"{folder}.lock")
    lock.unlink(missing_ok=True)
    lock.mkdir()  # no lock file can be made there, as in a cache on a read-only volume: a made check is only read
    try:
        assert backbone_runtime(again, runtime, say=print).name == runtime
        recorded = (folder / "checks.json").read_text()
        (folder / "checks.json").write_text(recorded.replace(f'"{runtime} ', f'"{runtime} 0.0.1-older '))
        assert backbone_runtime(again, runtime, say=print).name == runtime  # upgraded since: checked, not recorded
        assert "0.0.1-older" in (folder / "checks.json").read_text()
    finally:
        lock.rmdir()


@pytest.mark.skipif(not installed("openvino"), reason="openvino is not installed")
def test_the_cache_key_follows_the_weights_the_stage_runs(model_dir):
    model = Music2EmoModel.from_pretrained(model_dir).eval()
    key = fingerprint(model)
    with torch.no_grad():
        model.backbone.encoder.layers[0].attention.q_proj.weight.mul_(1.5)
    assert fingerprint(model) != key
    model.config.pooled_layers = [1]  # the second of the two layers is no longer run
    changed = fingerprint(model)
    assert changed != key
    with torch.no_grad():  # layers past the deepest pooled one never run, so they are not part of the key
        model.backbone.encoder.layers[1].attention.q_proj.weight.mul_(1.5)
    assert fingerprint(model) == changed
    model.backbone.config.hidden_act = "relu"  # the same weights computed otherwise: another graph
    assert fingerprint(model) != changed
    elsewhere = model_dir.parent / "the-same-model"
    shutil.copytree(model_dir, elsewhere, dirs_exist_ok=True)  # the same model in another folder: the same entry
    assert fingerprint(Music2EmoModel.from_pretrained(elsewhere)) == fingerprint(Music2EmoModel.from_pretrained(model_dir))


@pytest.mark.skipif(not installed("openvino"), reason="openvino is not installed")
def test_an_interrupted_export_leaves_nothing(model_dir, monkeypatch):
    import music2emo_hf.runtimes as runtimes

    model = Music2EmoModel.from_pretrained(model_dir).eval()
    with torch.no_grad():
        model.backbone.encoder.layers[0].attention.k_proj.weight.mul_(0.5)  # weights of its own: a fresh entry
    folder = cache_root() / fingerprint(model)

    def killed(model, partial):
        (partial / "front_end.onnx").write_bytes(b"half an ONNX file")
        raise KeyboardInterrupt

    monkeypatch.setattr(runtimes, "_export", killed)
    with pytest.raises(KeyboardInterrupt):
        backbone_runtime(model, "openvino", say=lambda _: None)
    assert not folder.exists() and not list(folder.parent.glob(f".{folder.name}.partial-*"))
    monkeypatch.undo()
    assert backbone_runtime(model, "openvino", say=lambda _: None).name == "openvino"


@pytest.mark.skipif(not installed("openvino"), reason="openvino is not installed")
def test_a_runtime_that_does_not_reproduce_torch_is_refused(model_dir):
    """A cache entry holding another model's graph (as a damaged or tampered cache would): the check against PyTorch
    catches it. Asked for by name, the runtime is refused with the figure; under `auto`, torch runs, with a warning."""
    other = Music2EmoModel.from_pretrained(model_dir).eval()
    model = Music2EmoModel.from_pretrained(model_dir).eval()
    with torch.no_grad():
        model.backbone.feature_projection.projection.weight.mul_(-1.0)
    folder = cache_root() / fingerprint(model)
    backbone_runtime(other, "openvino", say=lambda _: None)
    backbone_runtime(model, "torch")
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(cache_root() / fingerprint(other), folder)
    (folder / "checks.json").write_text("{}\n")
    shutil.rmtree(folder / "openvino", ignore_errors=True)
    with pytest.raises(RuntimeUnavailable, match=r"does not reproduce PyTorch on this model \(cosine .*use runtime='torch'"):
        backbone_runtime(model, "openvino", say=lambda _: None)
    with pytest.warns(UserWarning, match="runtime='auto' passes over openvino"):
        assert backbone_runtime(model, "auto", say=lambda _: None).name == "torch"
    shutil.rmtree(folder)


def test_the_command_takes_a_runtime(model_dir, write_wav, tmp_path):
    from music2emo_hf.cli import main

    clip = write_wav("clip.wav", tone(12))
    outputs = {}
    for runtime in ["torch"] + [name for name in ("openvino", "onnxruntime") if installed(name)]:
        out = tmp_path / f"{runtime}.jsonl"
        assert main(["predict", str(clip), "--model", str(model_dir), "--runtime", runtime, "--output", str(out)]) == 0
        outputs[runtime] = json.loads(out.read_text())
    for answer in outputs.values():
        assert abs(answer["valence"] - outputs["torch"]["valence"]) <= 1e-4
    with pytest.raises(SystemExit):
        main(["predict", str(clip), "--model", str(model_dir), "--runtime", "tensorrt"])


@pytest.mark.skipif(not installed("onnxruntime"), reason="onnxruntime is not installed")
def test_a_model_in_training_mode_is_exported_and_checked_without_dropout(model_dir):
    """As `music2emo init` hands a freshly built model over: the export and the check run it in eval mode (dropout
    would make the check fail), and the model is left in its own mode."""
    model = Music2EmoModel.from_pretrained(model_dir)
    with torch.no_grad():
        model.backbone.encoder.layers[0].attention.v_proj.weight.mul_(0.9)  # weights of its own: a fresh entry
    model.train()
    runtime = backbone_runtime(model, "onnxruntime", say=lambda _: None)
    assert model.training
    model.eval()
    probe = 0.1 * torch.randn(1, 24000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.nn.functional.cosine_similarity(runtime(probe), model.embed_equal_chunks(probe)).item() >= EXACT_COSINE


@pytest.mark.skipif(not installed("openvino"), reason="openvino is not installed")
def test_a_model_torch_cannot_export_runs_in_torch_under_auto(model_dir, monkeypatch):
    import music2emo_hf.runtimes as runtimes

    model = Music2EmoModel.from_pretrained(model_dir).eval()
    with torch.no_grad():
        model.backbone.encoder.layers[1].attention.q_proj.weight.mul_(0.7)  # weights of its own: a fresh entry

    def unsupported(model, partial):
        raise RuntimeError("Exporting the operator 'aten::fancy' to ONNX opset version 17 is not supported")

    monkeypatch.setattr(runtimes, "_export", unsupported)
    with pytest.warns(UserWarning, match=r"passes over openvino: torch could not export this model to ONNX \(Runtime"):
        assert backbone_runtime(model, "auto", say=lambda _: None).name == "torch"
    with pytest.raises(RuntimeUnavailable, match="aten::fancy"):
        backbone_runtime(model, "openvino", say=lambda _: None)


def _resident_kib(path) -> int:
    """How much of `path`'s mapped pages this process holds resident (/proc/self/smaps), in KiB."""
    resident, inside = 0, False
    for line in open("/proc/self/smaps", encoding="utf-8"):
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:  # a mapping's header: address range, ..., path
            inside = len(fields) >= 6 and fields[5] == str(path)
        elif inside and fields[0] == "Rss:":
            resident += int(fields[1])
    return resident


def _linux_at_least(major: int, minor: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    release = tuple(int(part) for part in re.findall(r"\d+", os.uname().release)[:2])
    return release >= (major, minor)


@pytest.mark.skipif(not _linux_at_least(5, 4), reason="MADV_PAGEOUT needs Linux 5.4")
def test_the_weights_read_to_key_the_cache_are_handed_back_unchanged(tmp_path):
    """An exported runtime runs the backbone, so the backbone's weights pages, read once to key the cache, are handed
    back to the kernel (232 MiB of MERT-95M's mapped file stayed resident); what they hold does not change."""
    from music2emo_hf.runtimes import _page_out

    from safetensors.torch import load_file, save_file

    path = tmp_path / "model.safetensors"
    save_file(torch.nn.Linear(1024, 1024).state_dict(), path)
    with open(path, "rb+") as file:  # written out, as a downloaded model is: the kernel keeps pages not yet written
        os.fsync(file.fileno())
    module = torch.nn.Linear(1024, 1024)
    module.load_state_dict(load_file(path), assign=True)  # the file's pages, mapped as from_pretrained maps them
    before = {name: tensor.clone() for name, tensor in module.state_dict().items()}
    assert _resident_kib(path) >= 4000  # 4 MiB of weights, read by the clone
    _page_out(module)
    assert _resident_kib(path) < 100
    for name, tensor in module.state_dict().items():
        assert torch.equal(tensor, before[name])


@pytest.mark.skipif(not installed("onnxruntime"), reason="onnxruntime is not installed")
def test_what_a_killed_export_left_is_removed_by_the_next_one(model_dir):
    """A first run killed while exporting leaves its partial folder beside the entry (hundreds of MB for MERT) or a
    partial int8 graph in it; the next run that exports removes them."""
    model = Music2EmoModel.from_pretrained(model_dir).eval()
    folder = runtimes.exported(model, say=lambda _: None)
    beside = folder.parent / f".{folder.name}.partial-killed"
    beside.mkdir()
    (beside / runtimes.ENCODER).write_bytes(b"half a graph")
    inside = folder / f".{runtimes.encoder_int8()}.partial-killed"
    inside.write_bytes(b"half a graph")
    (folder / runtimes.encoder_int8()).unlink(missing_ok=True)
    assert runtimes.exported(model, say=lambda _: None, int8=True) == folder
    assert (folder / runtimes.encoder_int8()).is_file() and not beside.exists() and not inside.exists()
